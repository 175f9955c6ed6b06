#!/usr/bin/env bash
# A real grpcurl against a real `warden serve` on a fresh SQLite database:
# list, describe, the README's walk-through (Register, Login, GetMe, Refresh,
# Logout), and every UserAdmin RPC.
#
# Usage: tests/smoke/grpcurl.sh [path/to/warden]   (needs grpcurl on PATH)
set -Eeuo pipefail

warden="${1:-target/debug/warden}"
work="$(mktemp -d)"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- server log" >&2; cat "$work/log" >&2; exit 1; }

WARDEN_LISTEN=127.0.0.1:0 WARDEN_HTTP_LISTEN=127.0.0.1:0 WARDEN_LOG_FORMAT=json \
  WARDEN_DATABASE_URL="sqlite://$work/warden.db?mode=rwc" \
  "$warden" serve >"$work/log" 2>&1 &
server=$!

addr=""
for _ in $(seq 1 100); do
  addr="$(grep -o '"grpc":"[^"]*"' "$work/log" | head -1 | cut -d'"' -f4 || true)"
  [ -n "$addr" ] && WARDEN_LISTEN="$addr" "$warden" healthcheck 2>/dev/null && break
  sleep 0.1
done
[ -n "$addr" ] || fail "the server did not start"

g() { grpcurl -plaintext "$@"; }

services="$(g "$addr" list)"
for s in warden.v1.Auth warden.v1.UserAdmin warden.v1.Organizations grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "grpcurl list lacks $s: $services"
done
g "$addr" describe warden.v1.Auth.Login | grep -q 'rpc Login' || fail "describe Login"
g "$addr" describe warden.v1.User | grep -q 'approved_by' || fail "describe User"

register="$(g -d '{"email":"ada@example.com","password":"correct horse battery staple","display_name":"Ada"}' \
  "$addr" warden.v1.Auth/Register)"
grep -q '"isAdmin": true' <<<"$register" || fail "first Register is not an admin: $register"

login="$(g -d '{"email":"ada@example.com","password":"correct horse battery staple","device":{"device_name":"smoke"}}' \
  "$addr" warden.v1.Auth/Login)"
token="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["accessToken"])' <<<"$login")"

me="$(g -H "authorization: Bearer $token" "$addr" warden.v1.Auth/GetMe)"
grep -q '"email": "ada@example.com"' <<<"$me" || fail "GetMe: $me"

if wrong="$(g -d '{"email":"ada@example.com","password":"wrong wrong wrong wrong"}' "$addr" warden.v1.Auth/Login 2>&1)"; then
  fail "a wrong password logged in"
fi
grep -q 'INVALID_CREDENTIALS' <<<"$wrong" || fail "wrong password reason: $wrong"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
refresh="$(json "['tokens']['refreshToken']" <<<"$login")"
pair="$(g -d "{\"refresh_token\":\"$refresh\"}" "$addr" warden.v1.Auth/Refresh)"
grep -q '"refreshToken"' <<<"$pair" || fail "Refresh: $pair"
if reused="$(g -d "{\"refresh_token\":\"$refresh\"}" "$addr" warden.v1.Auth/Refresh 2>&1)"; then
  fail "a rotated refresh token worked twice"
fi
grep -q 'REFRESH_TOKEN_REUSED' <<<"$reused" || fail "reuse reason: $reused"

# Every UserAdmin RPC, as an admin.
login="$(g -d '{"email":"ada@example.com","password":"correct horse battery staple"}' "$addr" warden.v1.Auth/Login)"
token="$(json "['tokens']['accessToken']" <<<"$login")"
a() { g -H "authorization: Bearer $token" "$@"; }
bob="$(g -d '{"email":"bob@example.com","password":"another long passphrase"}' "$addr" warden.v1.Auth/Register)"
bob_id="$(json "['user']['id']" <<<"$bob")"
a "$addr" warden.v1.UserAdmin/CountPendingUsers | grep -q '"count": "1"' || fail "CountPendingUsers"
a -d '{"status":"USER_STATUS_PENDING"}' "$addr" warden.v1.UserAdmin/ListUsers | grep -q bob@example.com || fail "ListUsers"
a -d "{\"user_id\":\"$bob_id\"}" "$addr" warden.v1.UserAdmin/GetUser | grep -q USER_STATUS_PENDING || fail "GetUser"
a -d "{\"user_id\":\"$bob_id\",\"status\":\"USER_STATUS_APPROVED\"}" "$addr" warden.v1.UserAdmin/UpdateUser \
  | grep -q '"approvedBy"' || fail "UpdateUser (approve)"
g -d '{"email":"bob@example.com","password":"another long passphrase"}' "$addr" warden.v1.Auth/Login >/dev/null \
  || fail "the approved user cannot log in"
a -d "{\"user_id\":\"$bob_id\"}" "$addr" warden.v1.UserAdmin/ListUserSessions | grep -q '"sessions"' || fail "ListUserSessions"
a -d "{\"user_id\":\"$bob_id\"}" "$addr" warden.v1.UserAdmin/RevokeUserSessions | grep -q '"revokedSessions": 1' \
  || fail "RevokeUserSessions"
a -d "{\"user_id\":\"$bob_id\",\"new_password\":\"yet another passphrase\"}" "$addr" warden.v1.UserAdmin/ResetPassword \
  >/dev/null || fail "ResetPassword"
carol="$(a -d '{"email":"carol@example.com","password":"a sturdy secret phrase","is_admin":true}' "$addr" warden.v1.UserAdmin/CreateUser)"
grep -q '"isAdmin": true' <<<"$carol" || fail "CreateUser: $carol"
a -d "{\"user_id\":\"$bob_id\"}" "$addr" warden.v1.UserAdmin/DeleteUser >/dev/null || fail "DeleteUser"
if gone="$(a -d "{\"user_id\":\"$bob_id\"}" "$addr" warden.v1.UserAdmin/GetUser 2>&1)"; then
  fail "a deleted user is still there"
fi
grep -q USER_NOT_FOUND <<<"$gone" || fail "deleted user reason: $gone"

g -H "authorization: Bearer $token" -d '{"all_sessions":true}' "$addr" warden.v1.Auth/Logout | grep -q revokedSessions \
  || fail "Logout"

echo "grpcurl smoke test passed against $addr"
