#!/usr/bin/env bash
# The main job: installs what is missing, starts the services, seeds data, serves every function
# on one port, and prints the benchmark table. The server keeps running; `quiver-local down` and
# `pkill -f "quiver-local serve"` stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source local/bootstrap.sh

say "build (dev profile: dependencies at opt-level 3, see Cargo.toml; the first build takes a while on 2 cores, see the README)"
cargo build --workspace
QL="$CARGO_TARGET_DIR/debug/quiver-local"

say "services"
"$QL" up
set -a; source local/.env.local; set +a

say "serve on http://$QUIVER_SERVE_ADDR"
if ! curl -sf "http://$QUIVER_SERVE_ADDR/health" >/dev/null 2>&1; then
  nohup "$QL" serve >"$QUIVER_CACHE/serve.log" 2>&1 &
  for _ in $(seq 1 100); do curl -sf "http://$QUIVER_SERVE_ADDR/health" >/dev/null 2>&1 && break; sleep 0.1; done
fi
curl -s "http://$QUIVER_SERVE_ADDR/health"; echo

say "benchmark"
# Cold starts use the binaries each function's own build left (bash local/test.sh makes them);
# the table does not wait for eight more builds.
"$QL" bench --reuse-binaries "$@"
