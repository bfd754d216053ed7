#!/usr/bin/env bash
# Sets up everything (Debian packages), builds deltaserve and runs the whole test suite.
# Usage: tests/run-tests.sh [ctest args...]     e.g. tests/run-tests.sh -R codec
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
# Release, like deploy/main-job.sh, so that the two quick-start commands share build/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}

deploy/install-deps.sh
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build_dir" -j "$jobs"
# One OpenBLAS thread: only the benchmarks call it (as a reference), never concurrently.
export OPENBLAS_NUM_THREADS=1
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 600 "$@"
