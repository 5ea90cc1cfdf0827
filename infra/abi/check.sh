#!/usr/bin/env bash
# Refuses a Lambda bootstrap that provided.al2023 could not start: one that needs a shared library
# the image may not have, or a symbol version newer than the image's glibc (2.34) or libgcc_s
# (GCC 11). libstdc++ must be linked statically, so GLIBCXX/CXXABI needs are refused too.
#
#   bash infra/abi/check.sh [--machine AArch64] BINARY_OR_ZIP...
#
# Prints one line per binary: its NEEDED libraries and the newest GLIBC version it asks for.
# Exits 1, naming the library or the symbol version, when one fails.
set -euo pipefail

MAX_GLIBC=2.34
MAX_GCC=11
# glibc's own libraries and the loader, and libgcc_s: what every provided.al2023 instance has.
ALLOWED="libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 ld-linux-aarch64.so.1 ld-linux-x86-64.so.2 libgcc_s.so.1"

machine=""
if [ "${1:-}" = --machine ]; then machine=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [--machine AArch64] BINARY_OR_ZIP..." >&2; exit 2; }
command -v readelf >/dev/null || { echo "readelf not found (apt-get install binutils)" >&2; exit 2; }

newer() { # is version $1 newer than $2?
  [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ]
}

failed=0
check_one() {
  local bin=$1 name=$2 problems=() needed=() cxx=() newest_glibc=none
  if [ -n "$machine" ]; then
    local m
    m=$(readelf -h "$bin" | awk -F: '/Machine:/ { gsub(/^ +/, "", $2); print $2 }')
    [ "$m" = "$machine" ] || problems+=("machine is $m, not $machine")
  fi
  mapfile -t needed < <(readelf -d --wide "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  for lib in "${needed[@]}"; do
    case " $ALLOWED " in *" $lib "*) ;; *) problems+=("needs $lib, which provided.al2023 does not promise") ;; esac
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
      GLIBCXX_* | CXXABI_*) cxx+=("$v") ;;
    esac
  done < <(readelf -V --wide "$bin" | sed -n 's/.*Name: \([A-Z_]*[0-9][0-9.]*\).*/\1/p' | sort -u)
  [ ${#cxx[@]} -eq 0 ] || problems+=("asks for ${cxx[*]}: link libstdc++ statically (provided.al2023 has GCC 11's)")
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
  if [[ "$arg" == *.zip ]]; then
    dir=$(mktemp -d)
    unzip -q -o "$arg" bootstrap -d "$dir"
    check_one "$dir/bootstrap" "$(basename "$(dirname "$arg")")"
    rm -rf "$dir"
  else
    check_one "$arg" "$(basename "$arg")"
  fi
done
exit "$failed"
