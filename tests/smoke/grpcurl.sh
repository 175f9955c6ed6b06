#!/usr/bin/env bash
# A real grpcurl against a real `warden serve` on a fresh SQLite database:
# list, describe, and the README's walk-through (Register, Login, GetMe).
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
for s in warden.v1.Auth warden.v1.UserAdmin grpc.health.v1.Health; do
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

echo "grpcurl smoke test passed against $addr"
