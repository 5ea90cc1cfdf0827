#!/usr/bin/env bash
# DuckDB, prebuilt: the official libduckdb.so of DuckDB 1.5.6 (Parquet, JSON and ICU built in; MIT),
# as DuckDB publishes it in the npm registry's @duckdb/node-bindings-linux-{x64,arm64}. Nothing of
# DuckDB's C++ compiles here. The duckdb crate (=1.10506.0, the 1.5.6 bindings) links it through
# DUCKDB_LIB_DIR; each function that uses DuckDB ships it as lib/libduckdb.so in its zip.
#
#   source local/duckdb.sh            # fetch for this machine; export DUCKDB_LIB_DIR, LD_LIBRARY_PATH
#   bash local/duckdb.sh arm64        # fetch for another architecture; print its directory
#
# Each package is pinned by the sha512 integrity of its npm tarball.
DUCKDB_VERSION=1.5.6
DUCKDB_NPM_RELEASE=1.5.6-r.1

duckdb_integrity() {
  case "$1" in
    x64) echo "sha512-IXcrZJE6kEqM0Z4wwdVnGBHX/frOS33VPNAwDXQ/Q+Fs84b058Qe94chrCCIcNJlG8Y3UHIUU4eBeCQxW5mN1Q==" ;;
    arm64) echo "sha512-3jnUaDil1BrF/6vAZwVaInJ1xoBaWGHB4PDiUnzJWKCo8a8TLx9j7/gPyPl/UGRBftrYIuTihRZSfF4mWMgtWA==" ;;
    *) return 1 ;;
  esac
}

# Prints the directory holding libduckdb.so for `x64` or `arm64`, fetching it first if needed.
duckdb_fetch() {
  local arch=$1 cache="${QUIVER_CACHE:-$HOME/.cache/quiver}"
  local dir="$cache/duckdb/$DUCKDB_VERSION/linux-$arch"
  if [ ! -f "$dir/libduckdb.so" ]; then
    local want pkg="node-bindings-linux-$arch-$DUCKDB_NPM_RELEASE.tgz" tmp
    want=$(duckdb_integrity "$arch") || { echo "no DuckDB build for $arch" >&2; return 1; }
    tmp=$(mktemp -d)
    printf '\033[1m==> DuckDB %s for linux-%s from the npm registry (%s)\033[0m\n' "$DUCKDB_VERSION" "$arch" "$pkg" >&2
    curl -fsSL --retry 3 --connect-timeout 20 --max-time 600 -o "$tmp/$pkg" \
      "https://registry.npmjs.org/@duckdb/node-bindings-linux-$arch/-/$pkg" || { rm -rf "$tmp"; return 1; }
    local got
    got="sha512-$(openssl dgst -sha512 -binary "$tmp/$pkg" | base64 -w0)"
    if [ "$got" != "$want" ]; then
      echo "refused $pkg: its integrity is $got, not the pinned $want" >&2
      rm -rf "$tmp"
      return 1
    fi
    tar -xzf "$tmp/$pkg" -C "$tmp" package/libduckdb.so package/LICENSE
    mkdir -p "$dir"
    mv "$tmp/package/LICENSE" "$dir/LICENSE"
    mv "$tmp/package/libduckdb.so" "$dir/libduckdb.so"
    rm -rf "$tmp"
  fi
  echo "$dir"
}

duckdb_host_arch() {
  case "$(uname -m)" in
    x86_64) echo x64 ;;
    aarch64) echo arm64 ;;
    *) echo "no prebuilt DuckDB for $(uname -m)" >&2; return 1 ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  duckdb_fetch "${1:-$(duckdb_host_arch)}"
else
  DUCKDB_LIB_DIR=$(duckdb_fetch "$(duckdb_host_arch)") && export DUCKDB_LIB_DIR && {
    case ":${LD_LIBRARY_PATH:-}:" in
      *":$DUCKDB_LIB_DIR:"*) ;;
      *) export LD_LIBRARY_PATH="$DUCKDB_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
  }
fi
