#!/usr/bin/env bash
# Builds one Lambda zip per function for `sam deploy`, and fails when one is over its size budget,
# when its bootstrap could not start on provided.al2023 (infra/abi/check.sh), or when it fails the
# deploy rehearsal under qemu-aarch64 (QUIVER_SKIP_REHEARSAL=1 skips that last step).
#
#   bash infra/package.sh            # every crate under functions/
#   bash infra/package.sh health     # only these
#
# Each function is its own `cargo lambda build --release --arm64 -p NAME` invocation: built
# together, Cargo would unify features across them and, e.g., link DuckDB into search. The zip is
# copied to target/lambda/NAME/bootstrap.zip, which infra/template.yaml's CodeUri points at.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver/target}"
[ -d "$HOME/.cache/quiver/venv/bin" ] && export PATH="$HOME/.cache/quiver/venv/bin:$PATH"
command -v cargo-lambda >/dev/null || {
  echo "cargo-lambda not found: run 'source local/bootstrap.sh' (or 'pip install cargo-lambda')" >&2
  exit 1
}

# Zip budgets in MB (10^6 bytes), the size targets of the bench's `size-*` rows. Every zip also stays under Lambda's
# 50 MB direct-upload limit.
LAMBDA_LIMIT_MB=50
budget_mb() {
  case "$1" in
    events) echo 5 ;;
    health) echo 6 ;;
    search) echo 10 ;;
    process | pg-benchmark) echo 15 ;;   # Polars
    analytics | snapshot) echo 25 ;;     # DuckDB
    *) echo "$LAMBDA_LIMIT_MB" ;;
  esac
}

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for manifest in functions/*/Cargo.toml; do names+=("$(basename "$(dirname "$manifest")")"); done
fi

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

command -v advzip >/dev/null || {
  printf '\033[1m==> apt-get install advancecomp (advzip recompresses the zips)\033[0m\n' >&2
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends advancecomp >/dev/null
}

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  printf '\033[1m==> rustup target add aarch64-unknown-linux-gnu\033[0m\n' >&2
  rustup target add aarch64-unknown-linux-gnu
fi

over=()
for name in "${names[@]}"; do
  [ -f "functions/$name/Cargo.toml" ] || { echo "no such function: functions/$name" >&2; exit 1; }
  compiler=() cross_env=() duckdb_dir=""
  if grep -q '"duckdb"' "functions/$name/Cargo.toml"; then
    # DuckDB is not compiled: the function links DuckDB's official arm64 libduckdb.so (1.5.6, from
    # the npm registry, pinned by its hash: local/duckdb.sh) and ships it as lib/libduckdb.so,
    # where Lambda's LD_LIBRARY_PATH (/var/task/lib) finds it. It needs libstdc++ GLIBCXX_3.4.22
    # and glibc 2.25 at most; provided.al2023 has GCC 11's libstdc++ and glibc 2.34.
    duckdb_dir=$(bash local/duckdb.sh arm64)
    # These functions link with Debian's GNU cross toolchain (the path that has linked DuckDB on
    # arm64 before); infra/abi/link.sh supplies arc4random, the one glibc 2.36 symbol it can ask.
    if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
      printf '\033[1m==> apt-get install gcc-aarch64-linux-gnu (to link against libduckdb.so)\033[0m\n' >&2
      sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu >/dev/null
    fi
    # The linker is copied to a path that is the same for every clone (Cargo rebuilds everything
    # when the linker's path changes), under a name ending in -gcc: rustc infers from the name
    # that it takes gcc's options (-Wl,...) rather than ld's.
    linker_dir="${QUIVER_CACHE:-$HOME/.cache/quiver}/abi"
    mkdir -p "$linker_dir"
    cp infra/abi/link.sh "$linker_dir/quiver-aarch64-gcc"
    cp infra/abi/arc4random.c "$linker_dir/"
    cross_env=(CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
      DUCKDB_LIB_DIR="$duckdb_dir"
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$linker_dir/quiver-aarch64-gcc")
    compiler=(--compiler cargo)
  fi
  printf '\033[1m==> cargo lambda build --release --arm64 %s-p %s\033[0m\n' "${compiler[*]:+${compiler[*]} }" "$name" >&2
  env "${cross_env[@]}" cargo lambda build --release --arm64 "${compiler[@]}" -p "$name" --output-format zip
  built="$CARGO_TARGET_DIR/lambda/$name/bootstrap.zip"
  out="target/lambda/$name/bootstrap.zip"
  mkdir -p "$(dirname "$out")"
  [ "$built" -ef "$out" ] || cp "$built" "$out"
  if [ -n "$duckdb_dir" ]; then
    stage=$(mktemp -d)
    mkdir -p "$stage/lib"
    cp "$duckdb_dir/libduckdb.so" "$duckdb_dir/LICENSE" "$stage/lib/"
    mv "$stage/lib/LICENSE" "$stage/lib/LICENSE.duckdb"
    (cd "$stage" && zip -q "$OLDPWD/$out" lib/libduckdb.so lib/LICENSE.duckdb)
    rm -rf "$stage"
  fi
  # cargo lambda deflates at zlib's default level; 7-Zip's deflate (advzip -3) packs the same
  # standard zip about 3% smaller, which is what keeps the Polars function under its budget.
  advzip -q -z -3 "$out"
  # A bootstrap that provided.al2023 cannot start never leaves the machine.
  bash infra/abi/check.sh --machine AArch64 "$out" || { rm -f "$out"; echo "refused: $out (see above)" >&2; exit 1; }
done

echo
printf '%-14s %10s %8s\n' function "zip bytes" budget
for name in "${names[@]}"; do
  out="target/lambda/$name/bootstrap.zip"
  bytes=$(wc -c <"$out")
  budget=$(budget_mb "$name")
  (( budget > LAMBDA_LIMIT_MB )) && budget=$LAMBDA_LIMIT_MB
  verdict=ok
  if (( bytes > budget * 1000000 )); then verdict=OVER; over+=("$name"); fi
  printf '%-14s %10d %5d MB  %s (%s MB)\n' "$name" "$bytes" "$budget" "$verdict" "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1e6 }')"
done

if [ ${#over[@]} -gt 0 ]; then
  echo "over budget: ${over[*]}" >&2
  exit 1
fi

# The zips `sam deploy` would upload, each seen answering before it leaves the machine: the deploy
# rehearsal (quiver-local rehearse) runs them as the template deploys them, under qemu-aarch64.
if [ "${QUIVER_SKIP_REHEARSAL:-0}" != 1 ]; then
  # libstdc++ for DuckDB's libduckdb.so: Debian's stands in here for the one provided.al2023 has.
  if ! command -v qemu-aarch64 >/dev/null || [ ! -f /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ]; then
    printf '\033[1m==> apt-get install qemu-user libc6-arm64-cross libstdc++6-arm64-cross (to run the arm64 zips here)\033[0m\n' >&2
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user libc6-arm64-cross libgcc-s1-arm64-cross libstdc++6-arm64-cross >/dev/null
  fi
  printf '\033[1m==> deploy rehearsal of the arm64 zips under qemu-aarch64\033[0m\n' >&2
  cargo build -q -p quiver-local
  only=()
  [ $# -gt 0 ] && for name in "${names[@]}"; do only+=(--only "$name"); done
  "$CARGO_TARGET_DIR/debug/quiver-local" rehearse --zips target/lambda "${only[@]}"
fi
