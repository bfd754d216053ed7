#!/usr/bin/env bash
# Regenerates tests/eval/RESULTS.md, results.json and rd_plot.png (the full comparison).
# Usage: tests/eval/run_eval.sh [run_eval.py options]   e.g. --deltactl build/client/deltactl
# Builds deltactl in $BUILD_DIR (default: build) if it is not given and not built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
"$here/setup.sh"
build_dir=${BUILD_DIR:-$root/build}
if [[ " $* " != *" --deltactl "* && " $* " != *" --standin "* && ! -x "$build_dir/client/deltactl" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja >/dev/null
  ninja -C "$build_dir" -j "${JOBS:-2}" deltactl
fi
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
args=("$@")
[[ " $* " == *" --deltactl "* || " $* " == *" --standin "* ]] || args+=(--deltactl "$build_dir/client/deltactl")
exec /usr/bin/python3 "$here/run_eval.py" "${args[@]}"
