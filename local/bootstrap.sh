#!/usr/bin/env bash
# Installs what Quiver needs on a fresh Debian/Ubuntu machine, then exports the environment.
# Sourced by run.sh and test.sh; safe to run again (it only installs what is missing).
set -euo pipefail

QUIVER_CACHE="${QUIVER_CACHE:-$HOME/.cache/quiver}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$QUIVER_CACHE/target}"
VENV="$QUIVER_CACHE/venv"
mkdir -p "$QUIVER_CACHE"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

have_pg_server() {
  have initdb && have pg_ctl && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

missing=()
have_pg_server || missing+=(postgresql)
{ have valkey-server || have redis-server; } || missing+=(redis-server)
have zip || missing+=(zip)
have openssl || missing+=(openssl)   # the TLS tests make a throwaway CA with it
have cc || missing+=(build-essential)
have c++ || missing+=(g++)
have pkg-config || missing+=(pkg-config)
have curl || missing+=(curl)
have unzip || missing+=(unzip)     # the deploy rehearsal unpacks the Lambda zips
have readelf || missing+=(binutils) # infra/abi/check.sh
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! have cargo; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
have cargo || { echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2; exit 1; }
# The test command checks formatting and lints; rustup's default profile has both components.
if have rustup && ! { have cargo-fmt && have cargo-clippy; }; then
  say "rustup component add rustfmt clippy"
  rustup component add rustfmt clippy
fi

if [ ! -x "$VENV/bin/cargo-lambda" ]; then
  say "pip install cargo-lambda (into $VENV)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q cargo-lambda
fi
if [ ! -x "$VENV/bin/cfn-lint" ]; then
  say "pip install cfn-lint (into $VENV)"
  "$VENV/bin/pip" install -q cfn-lint
fi
# The deploy rehearsal (quiver-local rehearse) reads the database secret from moto's Secrets Manager.
if [ ! -x "$VENV/bin/moto_server" ]; then
  say "pip install moto[server] (into $VENV)"
  "$VENV/bin/pip" install -q "moto[server]"
fi
# Schemathesis fuzzes `quiver-local serve` from its OpenAPI document in the test command.
SCHEMATHESIS_VERSION=4.32.5
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  say "pip install schemathesis $SCHEMATHESIS_VERSION (into $VENV)"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
export PATH="$VENV/bin:$PATH"
# DuckDB comes prebuilt (local/duckdb.sh): DUCKDB_LIB_DIR for the build, LD_LIBRARY_PATH to run.
source "$(dirname "${BASH_SOURCE[0]}")/duckdb.sh" || { echo "could not fetch DuckDB's libduckdb.so (local/duckdb.sh)" >&2; exit 1; }
