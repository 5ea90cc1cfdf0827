#!/usr/bin/env bash
# The linker of the arm64 functions that link DuckDB's libduckdb.so, with Debian's GNU cross
# toolchain: infra/package.sh sets it as CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER.
#
# Lambda's provided.al2023 has GCC 11's libstdc++ and glibc 2.34; Debian 12 has GCC 12's and 2.36.
# Should anything ask for libstdc++, it is linked statically (-lstdc++ becomes -l:libstdc++.a), and
# the one glibc 2.36 symbol GCC 12's libstdc++ then needs, arc4random, comes from arc4random.c.
# infra/package.sh checks the result (infra/abi/check.sh) and refuses a zip that asks for more.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cc=${QUIVER_AARCH64_CC:-aarch64-linux-gnu-gcc}

args=()
for a in "$@"; do
  case "$a" in
    -lstdc++) args+=("-l:libstdc++.a") ;;
    *) args+=("$a") ;;
  esac
done

obj=$(mktemp --suffix=.o)
trap 'rm -f "$obj"' EXIT
"$cc" -O2 -fPIC -c "$here/arc4random.c" -o "$obj"
"$cc" "${args[@]}" "$obj"
