#!/usr/bin/env bash
# The test command: installs what is missing, starts the services, runs every test against them.
set -euo pipefail
cd "$(dirname "$0")/.."
source local/bootstrap.sh
started=$(date +%s)

say "cargo fmt --check and clippy (warnings are errors)"
cargo fmt --all --check
cargo clippy -q --workspace --all-targets -- -D warnings

say "feature checks: each light feature of the quiver crate on its own"
for f in "" pg cache s3 lambda secrets testing; do
  cargo check -q -p quiver --no-default-features ${f:+--features $f}
done

say "each function built on its own, as Lambda packaging builds it (features do not unify)"
for dir in functions/*/; do
  cargo build -p "$(basename "$dir")"
done

say "cfn-lint infra/template.yaml"
cfn-lint infra/template.yaml

say "build"
cargo build --workspace --all-targets

say "services"
"$CARGO_TARGET_DIR/debug/quiver-local" up
set -a; source local/.env.local; set +a

say "tests"
set +e +o pipefail
cargo test --workspace --no-fail-fast 2>&1 | tee "$QUIVER_CACHE/last-test.log" \
  | grep --line-buffered -vE '^(running 0 tests|test result: ok. 0 passed.*)$|^\s*$|Running (unittests|tests)|Doc-tests'
status=${PIPESTATUS[0]}
set -e -o pipefail
# A step after the tests: its failure fails the run, and the remaining steps still run.
after() {
  local what=$1
  shift
  say "$what"
  "$@" || { echo "failed: $what" >&2; status=1; }
}
after "deploy rehearsal: every function as infra/template.yaml deploys it (its environment, secrets from moto, TLS-only services, the Lambda runtime API)" \
  "$CARGO_TARGET_DIR/debug/quiver-local" rehearse
after "bench --quick (keeps the suite from rotting; no figures asserted)" \
  "$CARGO_TARGET_DIR/debug/quiver-local" bench --quick --strict --out "$QUIVER_CACHE/bench-quick"
after "load: 64 connections for 10 s on cached and uncached analytics, search and POST /events; no errors, RSS flat" \
  "$CARGO_TARGET_DIR/debug/quiver-local" bench --only soak --soak-seconds 10 --connections 64 --strict --out "$QUIVER_CACHE/bench-soak"
after "schemathesis against quiver-local serve, from GET /openapi.json" bash local/schemathesis.sh

passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$QUIVER_CACHE/last-test.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -E '^test result:' "$QUIVER_CACHE/last-test.log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed ($(( $(date +%s) - started ))s)"
exit "$status"
