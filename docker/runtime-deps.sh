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

# Owner package of one library path. Debian 12 is usr-merged: dpkg may know the file as
# /lib/... while ldd prints /usr/lib/... (or the other way), so try both spellings.
owner_of() {
  local lib="$1" real alt out
  real=$(readlink -f "$lib")
  for cand in "$lib" "$real" "${lib#/usr}" "${real#/usr}" "/usr$lib" "/usr$real"; do
    if out=$(dpkg-query -S "$cand" 2>/dev/null); then
      alt=${out%%:*}
      echo "${alt%%,*}"
      return 0
    fi
  done
  return 1
}

declare -A pkgs=()
status=0
for bin in "$@"; do
  if [[ ! -x "$bin" ]]; then
    echo "runtime-deps: $bin: not an executable file" >&2
    exit 2
  fi
  while read -r lib; do
    if pkg=$(owner_of "$lib"); then
      pkgs["$pkg"]=1
    else
      echo "runtime-deps: $bin: no Debian package owns $lib" >&2
      status=2
    fi
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
  if ldd "$bin" | grep -q "not found"; then
    echo "runtime-deps: $bin: unresolved libraries:" >&2
    ldd "$bin" | grep "not found" >&2
    status=2
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
