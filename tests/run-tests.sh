#!/usr/bin/env bash
# Sets up everything (Debian packages), builds deltaserve and runs the whole test suite.
# Usage: tests/run-tests.sh [ctest args...]     e.g. tests/run-tests.sh -R codec
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), SKIP_INSTALL=1
# to skip apt (deploy/install-deps.sh), as for deploy/main-job.sh.
# Release, like deploy/main-job.sh, so that the two quick-start commands share build/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then deploy/install-deps.sh; fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build_dir" -j "$jobs"
# One OpenBLAS thread: only the benchmarks call it (as a reference), never concurrently.
export OPENBLAS_NUM_THREADS=1
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 600 "$@"

# The libFuzzer targets, 30 s each, in their own clang tree (build-fuzz/; skipped with a
# message where clang or libFuzzer is missing, or when ctest arguments were given).
# The long campaign is tests/fuzz/run_fuzz.sh.
fuzz_dir=${FUZZ_BUILD_DIR:-build-fuzz}
if (($# == 0)) && command -v clang++ >/dev/null &&
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  CC=clang CXX=clang++ cmake -S . -B "$fuzz_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDELTASERVE_BUILD_FUZZERS=ON -DDELTASERVE_BUILD_TESTS=OFF \
    -DDELTASERVE_BUILD_BENCHMARKS=OFF >/dev/null
  ninja -C "$fuzz_dir" -j "$jobs" all_fuzzers
  ctest --test-dir "$fuzz_dir" --output-on-failure -j "$jobs" --timeout 600
elif (($# == 0)); then
  echo "run-tests: clang/libFuzzer not found, fuzz targets skipped (deploy/install-deps.sh)"
fi
