#!/usr/bin/env bash
# REST through a real Envoy (deploy/envoy.yaml, unchanged but for ports and
# the descriptor path) in front of a real `warden serve`: status codes and
# JSON bodies of the REST mapping.
#
# Usage: tests/envoy/rest.sh [path/to/warden]   (needs envoy and curl on PATH)
set -Eeuo pipefail

warden="${1:-target/debug/warden}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  echo "--- warden log" >&2; tail -20 "$work/warden.log" >&2
  echo "--- envoy log" >&2; tail -20 "$work/envoy.log" >&2
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

grpc_port="$(free_port)"; http_port="$(free_port)"; rest_port="$(free_port)"; admin_port="$(free_port)"
WARDEN_LISTEN="127.0.0.1:$grpc_port" WARDEN_HTTP_LISTEN="127.0.0.1:$http_port" \
  WARDEN_DATABASE_URL="sqlite://$work/warden.db?mode=rwc" WARDEN_LOGIN_FAILURE_LIMIT=3 \
  "$warden" serve >"$work/warden.log" 2>&1 &
pids+=($!)
"$warden" descriptor-set >"$work/warden.pb"
sed -e "s/port_value: 8080/port_value: $rest_port/" \
    -e "s/port_value: 50051/port_value: $grpc_port/" \
    -e "s/port_value: 9901/port_value: $admin_port/" \
    -e "s#/etc/warden/warden.pb#$work/warden.pb#" \
    "$here/deploy/envoy.yaml" >"$work/envoy.yaml"
grep -q "address: 127.0.0.1, port_value: $admin_port" "$work/envoy.yaml" || fail "admin port not on loopback"
envoy -c "$work/envoy.yaml" --log-level warn --base-id "$rest_port" >"$work/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  WARDEN_LISTEN="127.0.0.1:$grpc_port" "$warden" healthcheck 2>/dev/null \
    && curl -fs "127.0.0.1:$admin_port/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "127.0.0.1:$admin_port/ready" >/dev/null || fail "envoy did not become ready"

base="http://127.0.0.1:$rest_port"
# call METHOD PATH [BODY] [TOKEN] -> sets $code and $body
call() {
  local args=(-s -o "$work/body" -w '%{http_code}' -X "$1" "$base$2" -H 'content-type: application/json')
  [ -n "${3:-}" ] && args+=(-d "$3")
  [ -n "${4:-}" ] && args+=(-H "authorization: Bearer $4")
  code="$(curl "${args[@]}")"
  body="$(cat "$work/body")"
}
expect() { [ "$code" = "$1" ] || fail "$2: expected HTTP $1, got $code: $body"; }
field() { python3 -c "import json,sys; v=json.loads(sys.argv[1]); print(eval('v'+sys.argv[2]))" "$body" "$1"; }

call POST /v1/auth/register '{"email":"ada@example.com","password":"correct horse battery staple","display_name":"Ada"}'
expect 200 "register"
[ "$(field "['user']['email']")" = ada@example.com ] || fail "register body: $body"
[ "$(field "['user']['is_admin']")" = True ] || fail "first user is admin: $body"
[ "$(field "['user']['status']")" = USER_STATUS_APPROVED ] || fail "status: $body"
for key in id display_name created_at updated_at approved_at; do
  [ -n "$(field "['user']['$key']")" ] || fail "user.$key missing: $body"
done

call POST /v1/auth/register '{"email":"ADA@example.com","password":"correct horse battery staple"}'
expect 409 "duplicate register"
[ "$(field "['message']")" = "Email already registered" ] || fail "duplicate message: $body"

call POST /v1/auth/login '{"email":"ada@example.com","password":"wrong wrong wrong wrong"}'
expect 401 "wrong password"

call POST /v1/auth/register '{"email":"bob@example.com","password":"another long passphrase"}'
expect 200 "second register"
bob_id="$(field "['user']['id']")"
[ "$(field "['user']['is_admin']")" = False ] || fail "primitive fields are printed: $body"
call POST /v1/auth/login '{"email":"bob@example.com","password":"another long passphrase"}'
expect 403 "pending login"

call POST /v1/auth/login '{"email":"ada@example.com","password":"correct horse battery staple","device":{"device_name":"curl"}}'
expect 200 "login"
token="$(field "['tokens']['access_token']")"
refresh="$(field "['tokens']['refresh_token']")"
[ "$(field "['tokens']['token_type']")" = Bearer ] || fail "token_type: $body"
[ -n "$(field "['session_id']")" ] || fail "session_id: $body"

call GET /v1/auth/me "" "$token"
expect 200 "GetMe with a bearer"
[ "$(field "['user']['email']")" = ada@example.com ] || fail "GetMe body: $body"
call GET /v1/auth/me
expect 401 "GetMe without a bearer"

call GET /v1/admin/users/not-a-uuid "" "$token"
expect 400 "bad id"
call GET /v1/admin/users/00000000-0000-4000-8000-000000000000 "" "$token"
expect 404 "unknown id"
call GET "/v1/admin/users?status=USER_STATUS_PENDING&page_size=10" "" "$token"
expect 200 "ListUsers with query parameters"
[ "$(field "['users'][0]['email']")" = bob@example.com ] || fail "ListUsers body: $body"
[ "$(field "['total_size']")" = 1 ] || fail "total_size: $body"
call GET /v1/admin/users/pending/count "" "$token"
expect 200 "CountPendingUsers"
[ "$(field "['count']")" = 1 ] || fail "count: $body"
call PATCH "/v1/admin/users/$bob_id" '{"status":"USER_STATUS_APPROVED"}' "$token"
expect 200 "UpdateUser"
[ "$(field "['user']['status']")" = USER_STATUS_APPROVED ] || fail "approve: $body"
call POST /v1/auth/login '{"email":"bob@example.com","password":"another long passphrase"}'
expect 200 "approved login"
bob_token="$(field "['tokens']['access_token']")"

# Tenancy: create an organisation, invite, accept, list the members.
call POST /v1/organizations '{"name":"Acme"}' "$token"
expect 200 "CreateOrganization"
org_id="$(field "['organization']['id']")"
call GET /v1/organizations "" "$token"
expect 200 "ListMyOrganizations"
[ "$(field "['memberships'][1]['organization']['name']")" = Acme ] || fail "memberships: $body"
call POST "/v1/organizations/$org_id/invitations" '{"email":"bob@example.com","role":"ORG_ROLE_ADMIN","roles":["agent"]}' "$token"
expect 200 "CreateInvitation"
invitation="$(field "['invitation_token']")"
[ "$(field "['invitation']['email']")" = bob@example.com ] || fail "invitation: $body"
call POST /v1/invitations/accept "{\"invitation_token\":\"$invitation\"}" "$bob_token"
expect 200 "AcceptInvitation"
[ "$(field "['membership']['role']")" = ORG_ROLE_ADMIN ] || fail "accept: $body"
call POST /v1/invitations/accept "{\"invitation_token\":\"$invitation\"}" "$bob_token"
expect 400 "AcceptInvitation reused"
call GET "/v1/organizations/$org_id/members?page_size=10" "" "$token"
expect 200 "ListMembers"
[ "$(field "['total_size']")" = 2 ] || fail "members: $body"
[ "$(field "['members'][0]['email']")" = bob@example.com ] || fail "newest member first: $body"
[ "$(field "['members'][0]['roles'][0]")" = agent ] || fail "member roles: $body"
call GET "/v1/organizations/00000000-0000-4000-8000-000000000000" "" "$bob_token"
expect 404 "GetOrganization of an unknown id"
call POST "/v1/organizations/$org_id/switch" '{}' "$bob_token"
expect 200 "SwitchOrganization"
switched="$(field "['tokens']['access_token']")"
call POST /v1/auth/validate "{\"access_token\":\"$switched\"}"
expect 200 "ValidateToken after the switch"
[ "$(field "['organization_id']")" = "$org_id" ] || fail "validate organization_id: $body"
[ "$(field "['org_role']")" = ORG_ROLE_ADMIN ] || fail "validate org_role: $body"
call GET "/v1/admin/organizations?name_contains=acm" "" "$token"
expect 200 "ListOrganizations"
[ "$(field "['total_size']")" = 1 ] || fail "ListOrganizations: $body"

call POST /v1/auth/validate "{\"access_token\":\"$token\"}"
expect 200 "ValidateToken"
[ "$(field "['active']")" = True ] || fail "validate: $body"
call GET /v1/auth/jwks
expect 200 "GetJwks"
case "$(field "['jwks_json']")" in *Ed25519*) ;; *) fail "jwks: $body";; esac
call POST /v1/auth/refresh "{\"refresh_token\":\"$refresh\"}"
expect 200 "Refresh"
call POST /v1/auth/refresh "{\"refresh_token\":\"$refresh\"}"
expect 401 "refresh reuse"

for _ in 1 2 3; do
  call POST /v1/auth/login '{"email":"carol@example.com","password":"wrong wrong wrong wrong"}'
  expect 401 "failed login"
done
call POST /v1/auth/login '{"email":"carol@example.com","password":"wrong wrong wrong wrong"}'
expect 429 "lockout"

echo "REST through Envoy passed (envoy on 127.0.0.1:$rest_port)"
