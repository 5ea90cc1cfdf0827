#!/usr/bin/env bash
# Fuzzes every documented operation of `quiver-local serve` with Schemathesis, from the server's own
# GET /openapi.json, with every check: no generated request may get a 5xx, a response that breaks
# the document, or take longer than 5 s; a request the document allows must not be refused
# (positive_data_acceptance), and one it forbids must not be accepted (negative_data_rejection).
# Expects the services up and local/.env.local sourced (local/test.sh does
# both). The heavy write routes are left out: /events/bulk (up to 1,000,000 rows), /snapshot and
# /index (a full export or index build each); their input handling has its own tests.
#
#   bash local/schemathesis.sh [extra st run options, e.g. --max-examples 500]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver/target}"
VENV="${QUIVER_CACHE:-$HOME/.cache/quiver}/venv"

addr="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp -t quiver-serve-XXXX.log)"
RUST_LOG=warn "$CARGO_TARGET_DIR/debug/quiver-local" serve --addr "$addr" >"$log" 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://$addr/openapi.json" >/dev/null && break
  kill -0 $serve 2>/dev/null || { echo "quiver-local serve exited:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.2
done

"$VENV/bin/st" --config-file local/schemathesis.toml run "http://$addr/openapi.json" \
  --checks all \
  --exclude-path /events/bulk --exclude-path /snapshot --exclude-path /index \
  --max-examples 50 --max-response-time 5 --request-timeout 10 \
  --seed 1 --generation-database none --no-color "$@"
