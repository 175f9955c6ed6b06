#!/usr/bin/env bash
# Builds the Dockerfile (with ../shared/tools/container-build.sh: podman, no
# Docker engine needed) and proves the image: under 100 MB, runs as a
# non-root user, serves gRPC health and a Register/Login round trip, and its
# own HEALTHCHECK passes.
#
# Usage: tests/container/run.sh   (needs grpcurl on PATH; CONTAINER_BUILD
#        may point at another copy of container-build.sh)
set -Eeuo pipefail

here="$(cd "$(dirname "$0")/../.." && pwd)"
tool=""
for candidate in "${CONTAINER_BUILD:-}" "$here/../shared/tools/container-build.sh" /work/shared/tools/container-build.sh; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then tool="$candidate"; break; fi
done
[ -n "$tool" ] || { echo "FAIL: container-build.sh not found (set CONTAINER_BUILD)" >&2; exit 1; }
tag=localhost/warden:ci
name="warden-ci-$$"
cleanup() { "$tool" podman rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; "$tool" podman logs "$name" 2>&1 | tail -20 >&2 || true; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$tool" build -t "$tag" "$here"

size="$("$tool" podman image inspect "$tag" --format '{{.Size}}')"
echo "image size: $((size / 1024 / 1024)) MiB"
[ "$size" -lt $((100 * 1024 * 1024)) ] || fail "the image is $size bytes, not under 100 MB"
user="$("$tool" podman image inspect "$tag" --format '{{.Config.User}}')"
[ "$user" = "10001:10001" ] || fail "the image runs as '$user'"

grpc="$(free_port)"; http="$(free_port)"
"$tool" podman run -d --name "$name" --network host \
  -e "WARDEN_LISTEN=127.0.0.1:$grpc" -e "WARDEN_HTTP_LISTEN=127.0.0.1:$http" "$tag" >/dev/null
addr="127.0.0.1:$grpc"
for _ in $(seq 1 100); do
  grpcurl -plaintext "$addr" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING && break
  sleep 0.2
done
grpcurl -plaintext "$addr" grpc.health.v1.Health/Check | grep -q '"SERVING"' || fail "gRPC health is not SERVING"

grpcurl -plaintext -d '{"email":"ada@example.com","password":"correct horse battery staple"}' \
  "$addr" warden.v1.Auth/Register | grep -q '"isAdmin": true' || fail "Register"
grpcurl -plaintext -d '{"email":"ada@example.com","password":"correct horse battery staple"}' \
  "$addr" warden.v1.Auth/Login | grep -q '"accessToken"' || fail "Login"

"$tool" podman healthcheck run "$name" || fail "the image's HEALTHCHECK fails"
"$tool" podman stop -t 10 "$name" >/dev/null
code="$("$tool" podman inspect "$name" --format '{{.State.ExitCode}}')"
[ "$code" = 0 ] || fail "the container exited $code on SIGTERM"
echo "container test passed: $tag"
