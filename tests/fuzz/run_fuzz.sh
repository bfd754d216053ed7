#!/usr/bin/env bash
# Builds and runs deltaserve's libFuzzer targets (tests/fuzz/*_fuzz.cc).
#
#   tests/fuzz/run_fuzz.sh                    # every target, >= 1M execs or 10 min each
#   tests/fuzz/run_fuzz.sh --runs 1000000 --seconds 600
#   tests/fuzz/run_fuzz.sh --target T --seconds 30 --build B --seeds S   # one ctest run
#
# Needs clang and libFuzzer (Debian: clang, libfuzzer-14-dev; deploy/install-deps.sh).
# The fuzz build is its own tree (build-fuzz/, clang, ASan + UBSan + libFuzzer
# coverage); the main gcc Release build is not touched. Seeds come from real files
# (tests/fuzz/make_seeds.py, using build/client/deltactl and ../shared/models); each run
# fuzzes a fresh copy of them. Prints, per target: executions, exec/s, coverage (edges),
# corpus size and findings (crash/leak/timeout files kept under build-fuzz/findings/).
# Inputs that once crashed a target are kept in tests/fuzz/regressions/<target>/ and
# are part of every run.
# Exit status: 1 if any target found something, 0 otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
targets=(safetensors safetensors_index container dct_payload ecq_payload tfjs tenants_config
         put_delta_stream)
build="$repo/build-fuzz" seeds="" seconds=600 runs=1000000 only=""
while (($#)); do
  case "$1" in
    --target) only=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    *) echo "usage: $0 [--target T] [--seconds S] [--runs N] [--build DIR] [--seeds DIR]" >&2
       exit 2 ;;
  esac
done
seeds=${seeds:-$build/fuzz-seeds}

# Seeds are made once: ctest runs the targets in parallel, so the first run makes them
# under a lock and the others wait for it, then find them made.
make_seeds() {
  mkdir -p "$(dirname "$seeds")"
  (
    flock 9
    [[ -d "$seeds/container" ]] && exit 0
    local deltactl="$repo/build/client/deltactl"
    if [[ ! -x "$deltactl" ]]; then
      cmake -S "$repo" -B "$repo/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
      ninja -C "$repo/build" deltactl >/dev/null
    fi
    /usr/bin/python3 "$repo/tests/fuzz/make_seeds.py" "$seeds" "$deltactl" \
      "$repo/../shared/models" "$repo"
  ) 9>"$seeds.lock"
}

# One target for `seconds` (and at most `runs` execs, -1 = no limit); prints one line.
run_one() {
  local t=$1 max_runs=$2
  local corpus findings log
  corpus=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$t.XXXXXX")
  findings="$build/findings/$t"
  mkdir -p "$findings"
  cp -r "$seeds/$t/." "$corpus/" 2>/dev/null || true
  cp -r "$repo/tests/fuzz/regressions/$t/." "$corpus/" 2>/dev/null || true  # past findings
  log="$build/findings/$t.log"
  local rc=0
  "$build/tests/fuzz/${t}_fuzz" -max_total_time="$seconds" -runs="$max_runs" \
    -max_len=262144 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/" "$corpus" >"$log" 2>&1 || rc=$?
  local execs cov ft_ corp found
  execs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" | tail -1)
  cov=$(grep -oP '(?<=cov: )\d+' "$log" | tail -1)
  ft_=$(grep -oP '(?<=ft: )\d+' "$log" | tail -1)
  corp=$(find "$corpus" -type f | wc -l)
  found=$(find "$findings" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
          -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  printf '%-18s execs %10s  exec/s %7s  cov %5s  ft %6s  corpus %5s  findings %s%s\n' \
    "$t" "${execs:-?}" "$(grep -oP 'stat::average_exec_per_sec:\s*\K\d+' "$log" | tail -1)" \
    "${cov:-?}" "${ft_:-?}" "$corp" "$found" "$([[ $rc -ne 0 ]] && echo "  (rc $rc, see $log)")"
  rm -rf "$corpus"
  [[ $rc -eq 0 && $found -eq 0 ]]
}

if [[ -n "$only" ]]; then
  make_seeds
  run_one "$only" -1
  exit
fi

command -v clang++ >/dev/null || { echo "run_fuzz: clang++ not found (deploy/install-deps.sh)" >&2; exit 2; }
if [[ ! -f "$build/build.ninja" ]]; then
  CC=clang CXX=clang++ cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDELTASERVE_BUILD_FUZZERS=ON -DDELTASERVE_BUILD_TESTS=OFF \
    -DDELTASERVE_BUILD_BENCHMARKS=OFF >/dev/null
fi
ninja -C "$build" -j"${NINJA_JOBS:-2}" all_fuzzers >/dev/null
make_seeds
status=0
for t in "${targets[@]}"; do
  run_one "$t" "$runs" || status=1
done
exit $status
