#!/usr/bin/env bash
# Runs docs/walkthrough.md as written: every ```sh block, in order, in one
# bash session with `set -euo pipefail`, each checked against the ```json
# or ```console block the page shows after it (the conventions are in
# tests/walkthrough/walkthrough.py and at the top of the page).
#
# The session runs in a temporary directory laid out like a checkout, so
# the page's paths work unchanged: target/release/warden is the binary
# given here, deploy/ is this checkout's. The page starts its own server
# and Envoy; this script only hands it free ports (GRPC_PORT, HTTP_PORT,
# REST_PORT, ENVOY_ADMIN_PORT, SMTP_PORT), a TMPDIR inside its temporary directory
# (so the page's `mktemp -d` is cleaned up with it) and an environment
# without WARDEN_* variables.
#
# Usage: tests/walkthrough/run.sh [path/to/warden]
#   (default target/release/warden; needs grpcurl, envoy, curl, jq and
#   python3 with aiosmtpd on PATH)
# Environment:
#   WALKTHROUGH_DOC      the page to run (default docs/walkthrough.md)
#   WALKTHROUGH_TIMEOUT  how long the whole session may take (default 600s)
set -Eeuo pipefail

here="$(cd "$(dirname "$0")/../.." && pwd)"
doc="${WALKTHROUGH_DOC:-$here/docs/walkthrough.md}"
warden="${1:-$here/target/release/warden}"

missing=()
for tool in grpcurl envoy curl jq python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
python3 -c 'import aiosmtpd' 2>/dev/null || missing+=("aiosmtpd (the python3 on PATH)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "FAIL: the walk-through needs ${missing[*]} on PATH (.ci/run's tools step installs them)" >&2
  exit 1
fi
[ -x "$warden" ] || { echo "FAIL: no warden binary at $warden (cargo build --release, or pass its path)" >&2; exit 1; }
warden="$(cd "$(dirname "$warden")" && pwd)/$(basename "$warden")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/checkout/target/release" "$tmp/tmp"
ln -s "$warden" "$tmp/checkout/target/release/warden"
ln -s "$here/deploy" "$tmp/checkout/deploy"

read -r grpc_port http_port rest_port admin_port smtp_port < <(python3 - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(5)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
)

python3 "$here/tests/walkthrough/walkthrough.py" script "$doc" "$tmp/steps" >"$tmp/session.sh"

# A clean environment for the page: no WARDEN_* setting of the caller's.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^WARDEN_' || true)

echo "running $doc with $warden (gRPC on 127.0.0.1:$grpc_port, REST on 127.0.0.1:$rest_port)"
cd "$tmp/checkout"
TMPDIR="$tmp/tmp" GRPC_PORT="$grpc_port" HTTP_PORT="$http_port" REST_PORT="$rest_port" \
  ENVOY_ADMIN_PORT="$admin_port" SMTP_PORT="$smtp_port" \
  timeout "${WALKTHROUGH_TIMEOUT:-600}" bash "$tmp/session.sh" </dev/null
