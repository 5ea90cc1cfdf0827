#!/usr/bin/env bash
# Refuses a Lambda bootstrap that provided.al2023 could not start: one that needs a shared library
# the image may not have, or a symbol version newer than the image's glibc (2.34), libgcc_s or
# libstdc++ (GCC 11's: GLIBCXX_3.4.29, CXXABI_1.3.13). A zip is checked whole: its bootstrap and
# every library it ships in lib/ (where Lambda's LD_LIBRARY_PATH looks), which the others may need.
#
#   bash infra/abi/check.sh [--machine AArch64] BINARY_OR_ZIP...
#
# Prints one line per binary: its NEEDED libraries and the newest GLIBC version it asks for.
# Exits 1, naming the library or the symbol version, when one fails.
set -euo pipefail

MAX_GLIBC=2.34
MAX_GCC=11
MAX_GLIBCXX=3.4.29
MAX_CXXABI=1.3.13
# glibc's own libraries and the loader, libgcc_s and libstdc++: what every provided.al2023
# instance has (its microdnf is C++). Debian's libstdc++ is never shipped: it needs glibc 2.36.
ALLOWED="libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 ld-linux-aarch64.so.1 ld-linux-x86-64.so.2 libgcc_s.so.1 libstdc++.so.6"
# The libraries a zip ships in lib/, allowed for the binaries of that zip.
shipped=""

machine=""
if [ "${1:-}" = --machine ]; then machine=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [--machine AArch64] BINARY_OR_ZIP..." >&2; exit 2; }
command -v readelf >/dev/null || { echo "readelf not found (apt-get install binutils)" >&2; exit 2; }

newer() { # is version $1 newer than $2?
  [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ]
}

failed=0
check_one() {
  local bin=$1 name=$2 problems=() needed=() newest_glibc=none
  if [ -n "$machine" ]; then
    local m
    m=$(readelf -h "$bin" | awk -F: '/Machine:/ { gsub(/^ +/, "", $2); print $2 }')
    [ "$m" = "$machine" ] || problems+=("machine is $m, not $machine")
  fi
  mapfile -t needed < <(readelf -d --wide "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  for lib in "${needed[@]}"; do
    case " $ALLOWED $shipped " in *" $lib "*) ;; *) problems+=("needs $lib, which provided.al2023 does not promise and the zip does not ship") ;; esac
  done
  local v
  while read -r v; do
    case "$v" in
      GLIBC_2.*)
        local n=${v#GLIBC_}
        if [ "$newest_glibc" = none ] || newer "$n" "$newest_glibc"; then newest_glibc=$n; fi
        if newer "$n" "$MAX_GLIBC"; then problems+=("asks for $v (provided.al2023 has glibc $MAX_GLIBC): $(symbols_of "$bin" "$v")"); fi
        ;;
      GCC_*)
        local g=${v#GCC_}
        if newer "${g%%.*}" "$MAX_GCC"; then problems+=("asks for $v (provided.al2023 has GCC $MAX_GCC's libgcc_s)"); fi
        ;;
      GLIBCXX_*)
        if newer "${v#GLIBCXX_}" "$MAX_GLIBCXX"; then problems+=("asks for $v (provided.al2023 has GCC $MAX_GCC's libstdc++, GLIBCXX_$MAX_GLIBCXX): $(symbols_of "$bin" "$v")"); fi
        ;;
      CXXABI_1.*)
        if newer "${v#CXXABI_}" "$MAX_CXXABI"; then problems+=("asks for $v (provided.al2023 has CXXABI_$MAX_CXXABI)"); fi
        ;;
    esac
  done < <(readelf -V --wide "$bin" | sed -n 's/.*Name: \([A-Z_]*[0-9][0-9.]*\).*/\1/p' | sort -u)
  printf '%-14s NEEDED %-60s newest GLIBC_%s\n' "$name" "$(IFS=,; echo "${needed[*]}")" "$newest_glibc"
  if [ ${#problems[@]} -gt 0 ]; then
    for p in "${problems[@]}"; do echo "REFUSED $name: $p" >&2; done
    failed=1
  fi
}

# The symbols that ask for a version, so that the refusal says what to fix.
symbols_of() {
  objdump -T "$1" 2>/dev/null | awk -v v="($2)" '$0 ~ v { print $NF }' | sort -u | head -n 5 | paste -sd, -
}

for arg in "$@"; do
  if [ ! -f "$arg" ]; then
    echo "REFUSED $arg: no such file" >&2
    failed=1
  elif [[ "$arg" == *.zip ]]; then
    dir=$(mktemp -d)
    unzip -q -o "$arg" -d "$dir"
    [ -f "$dir/bootstrap" ] || { echo "REFUSED $arg: no bootstrap at the root of the zip" >&2; failed=1; }
    zip_name=$(basename "$(dirname "$arg")")
    shipped=""
    for lib in "$dir"/lib/*.so*; do [ -f "$lib" ] && shipped+=" $(basename "$lib")"; done
    [ -f "$dir/bootstrap" ] && check_one "$dir/bootstrap" "$zip_name"
    for lib in "$dir"/lib/*.so*; do [ -f "$lib" ] && check_one "$lib" "$zip_name:lib/$(basename "$lib")"; done
    shipped=""
    rm -rf "$dir"
  else
    check_one "$arg" "$(basename "$arg")"
  fi
done
exit "$failed"
