#!/usr/bin/env bash
# compress_bench: `deltactl compress` of stream_bench's model (issue 9's encoder goal: the
# 0.5 G-weight model in < 5 s wall on 2 cores), optionally A/B against another deltactl.
#
#   tests/bench/compress_bench.sh [BUILD_DIR] [RUNS]        (default: build 3)
#
# Uses stream_bench's base and finetuned models ($WORKDIR, default
# /tmp/deltaserve-stream-bench/24x896x4864x151936: run build/tests/bench/stream_bench once
# to make them; fixed seed, ~1 GB each). Each run is `deltactl compress --threads $THREADS`
# (default 2) at the default codec (v2, 1 bit/weight) into $OUT_DIR (default /dev/shm),
# timed by /usr/bin/time: wall, user and system seconds, CPU use as a share of THREADS
# cores ((user + system) / wall / THREADS), max RSS, and the container size. With
# DELTACTL_B set (e.g. an older build), runs alternate A, B, A, B ... back to back and
# each B container is compared (cmp) with A's; the medians of each are printed last.
# Reads both models once first, so that every run finds them in the page cache.
set -euo pipefail
BUILD=${1:-build}
RUNS=${2:-3}
WORKDIR=${WORKDIR:-/tmp/deltaserve-stream-bench/24x896x4864x151936}
OUT_DIR=${OUT_DIR:-/dev/shm}
THREADS=${THREADS:-2}
DELTACTL=${DELTACTL:-$BUILD/client/deltactl}
DELTACTL_B=${DELTACTL_B:-}
for f in "$WORKDIR/base.safetensors" "$WORKDIR/ft.safetensors" "$DELTACTL" ${DELTACTL_B:+"$DELTACTL_B"}; do
  [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/compress-bench.XXXXXX)
trap 'rm -rf "$TMP" "$OUT_DIR"/compress-bench.*.dds' EXIT
cat "$WORKDIR/base.safetensors" "$WORKDIR/ft.safetensors" >/dev/null
echo "deltactl compress --threads $THREADS of $WORKDIR ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
labels=(A)
[ -z "$DELTACTL_B" ] || labels=(A B)
declare -A walls
for run in $(seq "$RUNS"); do
  for label in "${labels[@]}"; do
    bin=$DELTACTL
    [ "$label" = A ] || bin=$DELTACTL_B
    out="$OUT_DIR/compress-bench.$label.dds"
    /usr/bin/time -f "%e %U %S %M" -o "$TMP/time" "$bin" compress --threads "$THREADS" \
      --base "$WORKDIR/base.safetensors" --finetuned "$WORKDIR/ft.safetensors" --out "$out" \
      >/dev/null 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
    read -r wall user sys rss <"$TMP/time"
    same=""
    if [ "$label" = B ]; then
      if cmp -s "$OUT_DIR/compress-bench.A.dds" "$out"; then same=", same bytes as A"; else same=", BYTES DIFFER from A"; fi
    fi
    awk -v l="$label" -v r="$run" -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" \
      -v b="$(stat -c %s "$out")" -v t="$THREADS" -v same="$same" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
      'BEGIN { printf "%s run %d: wall %.2f s, user %.2f s, sys %.2f s, CPU %.0f%% of %d cores, max RSS %.0f MB, container %d bytes%s (load %s)\n", l, r, w, u, s, 100 * (u + s) / w / t, t, m / 1024, b, same, load }'
    walls[$label]+="$wall "
  done
done
for label in "${labels[@]}"; do
  echo "${walls[$label]}" | tr ' ' '\n' | grep . | sort -g |
    awk -v l="$label" '{ v[NR] = $1 } END { printf "%s median wall %.2f s over %d runs (goal: < 5 s on 2 cores)\n", l, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), NR }'
done
