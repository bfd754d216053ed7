#!/usr/bin/env bash
# Lists the Debian packages that own the shared libraries a set of ELF binaries load.
#   docker/runtime-deps.sh BINARY...                  prints one package per line, sorted
#   docker/runtime-deps.sh --check LIST BINARY...     exits 1 (naming them) if a needed package
#                                                    is missing from LIST (docker/runtime-packages.txt)
# Used by docker/Dockerfile (build stage) and the ctest test deploy_runtime_packages.
# Exit codes: 0 ok, 1 packages missing from LIST, 2 usage or an unresolvable library.
set -euo pipefail

check_list=""
if [[ "${1:-}" == "--check" ]]; then
  check_list="${2:?--check needs a package list file}"
  shift 2
fi
if (($# == 0)); then
  echo "usage: $0 [--check LIST] BINARY..." >&2
  exit 2
fi

# The libraries, resolved by ldd. Debian 12 is usr-merged: dpkg may know a file as /lib/...
# while ldd prints /usr/lib/... (or the other way), and through symlinks; so each library
# gets several candidate spellings, and ONE dpkg-query call (each call reads dpkg's whole
# file list, seconds on a busy machine) answers for all of them.
declare -A cands=()   # library -> space-separated candidate paths
status=0
for bin in "$@"; do
  if [[ ! -x "$bin" ]]; then
    echo "runtime-deps: $bin: not an executable file" >&2
    exit 2
  fi
  out=$(ldd "$bin")
  if grep -q "not found" <<<"$out"; then
    echo "runtime-deps: $bin: unresolved libraries:" >&2
    grep "not found" <<<"$out" >&2
    status=2
  fi
  while read -r lib; do
    real=$(readlink -f "$lib")
    cands["$lib"]="$lib $real ${lib#/usr} ${real#/usr} /usr$lib /usr$real"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out")
done
((status == 0)) || exit "$status"

declare -A owner=()   # path -> package
all=()
for lib in "${!cands[@]}"; do
  read -ra c <<<"${cands[$lib]}"
  all+=("${c[@]}")
done
while IFS= read -r line; do
  pkg=${line%%: *}
  owner["${line#*: }"]=${pkg%%,*}
done < <(dpkg-query -S "${all[@]}" 2>/dev/null | grep -v '^diversion')

declare -A pkgs=()
for lib in "${!cands[@]}"; do
  found=""
  for c in ${cands[$lib]}; do
    if [[ -n "${owner[$c]:-}" ]]; then found=${owner[$c]}; break; fi
  done
  if [[ -z "$found" ]]; then
    echo "runtime-deps: no Debian package owns $lib" >&2
    status=2
  else
    pkgs["${found%%:*}"]=1
  fi
done
((status == 0)) || exit "$status"

if [[ -z "$check_list" ]]; then
  printf '%s\n' "${!pkgs[@]}" | sort
  exit 0
fi

mapfile -t listed < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$check_list" | grep -v '^$')
missing=()
for p in "${!pkgs[@]}"; do
  found=0
  for l in "${listed[@]}"; do [[ "$l" == "$p" ]] && found=1 && break; done
  ((found)) || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "runtime-deps: packages needed by $* but not in $check_list: ${missing[*]}" >&2
  exit 1
fi
echo "runtime-deps: all ${#pkgs[@]} library packages of $# binaries are listed in $check_list"
