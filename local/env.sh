# The environment Quiver's commands expect, for an interactive shell: `source local/env.sh`.
# It only sets variables (and fetches DuckDB's libduckdb.so the first time); it never exits the
# shell. local/bootstrap.sh installs what is missing, then sets the same.
#   CARGO_TARGET_DIR  ~/.cache/quiver/target, outside the checkout
#   DUCKDB_LIB_DIR    the prebuilt libduckdb.so the duckdb crate links (local/duckdb.sh)
#   LD_LIBRARY_PATH   the same directory, so that binaries that link DuckDB start
#   PATH              cargo, and the venv with cargo-lambda, cfn-lint, moto and schemathesis
QUIVER_CACHE="${QUIVER_CACHE:-$HOME/.cache/quiver}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$QUIVER_CACHE/target}"
[ -d "$QUIVER_CACHE/venv/bin" ] && case ":$PATH:" in *":$QUIVER_CACHE/venv/bin:"*) ;; *) export PATH="$QUIVER_CACHE/venv/bin:$PATH" ;; esac
[ -x "$HOME/.cargo/bin/cargo" ] && case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
source "$(dirname "${BASH_SOURCE[0]}")/duckdb.sh" || echo "DuckDB's libduckdb.so could not be fetched (local/duckdb.sh)" >&2
