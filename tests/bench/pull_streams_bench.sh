#!/usr/bin/env bash
# pull_streams_bench: `deltactl pull --streams N` of a cached task from a real deltaserved
# over loopback, with the CPU time of each side per GB pulled.
#
#   tests/bench/pull_streams_bench.sh [BUILD_DIR] [STREAMS...]   (default: build 1 2 4 1)
#
# A STREAMS item "N/spill" pulls with --include '*' (the same tensors and bytes, but a
# name filter makes deltactl spill the tensors to scratch files and copy them into the
# output at the end, the way every pull did before it wrote the file in place).
# Uses stream_bench's model and container ($WORKDIR, default
# /tmp/deltaserve-stream-bench/24x896x4864x151936: run build/tests/bench/stream_bench once
# to make them). Starts deltaserved (--workers 2, 3 GiB cache) on a fresh database, pushes
# the task, pulls it once to fill the merged-tensor cache, then for each N runs
# `deltactl pull --streams N` into $OUT_DIR (default /dev/shm: the figure is the transfer,
# not the disk; the pull still fsyncs) and prints wall seconds, GB/s (1 GB = 1e9 bytes of
# the output file), the ratio to the first N, and CPU seconds (user + system) per GB of
# the client (deltactl, from /usr/bin/time) and of the server (/proc/PID/stat before and
# after), and the client's minor page faults. Every output is compared (cmp) with the
# first one. DELTACTL / DELTASERVED override the binaries (e.g. an older deltactl against
# the same server). DELTACTL_B: a second deltactl; every item is then pulled by both,
# back to back (A, then B), against the same server. Each line ends with the 1-minute
# load average; the end prints, per binary and N, the median and the range of GB/s and
# of each side's CPU per GB over the items (repeat an N to get a spread: 1 4 1 4 1 4).
set -euo pipefail
BUILD=${1:-build}
shift || true
STREAMS=("$@")
[ ${#STREAMS[@]} -gt 0 ] || STREAMS=(1 2 4 1)
WORKDIR=${WORKDIR:-/tmp/deltaserve-stream-bench/24x896x4864x151936}
OUT_DIR=${OUT_DIR:-/dev/shm}
DELTASERVED=${DELTASERVED:-$BUILD/server/deltaserved}
DELTACTL=${DELTACTL:-$BUILD/client/deltactl}
DELTACTL_B=${DELTACTL_B:-}
for f in "$WORKDIR/base.safetensors" "$WORKDIR/task.dds" "$DELTASERVED" "$DELTACTL"; do
  [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/pull-streams-bench.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
ADDR=127.0.0.1:$PORT
"$DELTASERVED" --base "$WORKDIR/base.safetensors" --db "$TMP/db" --listen "$ADDR" \
  --metrics-listen "" --workers 2 --cache-bytes $((3 << 30)) >"$TMP/server.log" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$TMP" "$OUT_DIR"/pull-streams-bench.*.safetensors
}
trap cleanup EXIT
for _ in $(seq 100); do
  "$DELTACTL" list --server "$ADDR" >/dev/null 2>&1 && break
  sleep 0.2
done
"$DELTACTL" push --server "$ADDR" --task bench --in "$WORKDIR/task.dds" >/dev/null
# Cold pull: fills the cache.
"$DELTACTL" pull --server "$ADDR" --task bench --out "$OUT_DIR/pull-streams-bench.warm.safetensors" \
  >/dev/null 2>&1
ticks=$(getconf CLK_TCK)
server_cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$SERVER/stat"; }
first_rate=""
first_out=""
echo "deltactl pull --streams N of a cached task ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
pull_one() {  # pull_one LABEL BINARY ITEM
  local label=$1 bin=$2 item=$3
  local n=${item%/spill}
  local extra=()
  [ "$item" = "$n" ] || extra=(--include '*')
  local out="$OUT_DIR/pull-streams-bench.$n.$RANDOM.safetensors"
  local s0 s1 wall user sys faults bytes
  s0=$(server_cpu)
  /usr/bin/time -f "%e %U %S %R" -o "$TMP/time" \
    "$bin" pull --server "$ADDR" --task bench --streams "$n" "${extra[@]}" --out "$out" \
    >/dev/null 2>"$TMP/pull.err" || { cat "$TMP/pull.err" >&2; exit 1; }
  s1=$(server_cpu)
  read -r wall user sys faults <"$TMP/time"
  bytes=$(stat -c %s "$out")
  if [ -z "$first_out" ]; then
    first_out=$out
  else
    cmp "$first_out" "$out" || { echo "--streams $n ($label): output differs" >&2; exit 1; }
    rm -f "$out"
  fi
  awk -v l="$label" -v n="$item" -v w="$wall" -v u="$user" -v s="$sys" -v a="$s0" -v b="$s1" \
      -v by="$bytes" -v f="$first_rate" -v flt="$faults" -v load="$(cut -d' ' -f1 /proc/loadavg)" -v summary="$TMP/summary" \
      'BEGIN {
    gb = by / 1e9; rate = gb / w; ratio = (f == "" ? 1 : rate / f);
    printf "%s--streams %-8s %6.2f s  %6.3f GB/s  = %.2fx the first   client CPU %5.2f s/GB (%.2f user, %.2f sys, %6d faults)   server CPU %5.2f s/GB   both %5.2f s/GB = %.2f cores   load %s\n",
      l, n, w, rate, ratio, (u + s) / gb, u / gb, s / gb, flt, (b - a) / gb, (u + s + b - a) / gb,
      (u + s + b - a) / w, load
    printf "%s %s %f %f %f\n", (l == "" ? "A" : l), n, rate, (u + s) / gb, (b - a) / gb >> summary }'
  [ -n "$first_rate" ] || first_rate=$(awk -v w="$wall" -v by="$bytes" 'BEGIN {print by / 1e9 / w}')
}
for item in "${STREAMS[@]}"; do
  if [ -n "$DELTACTL_B" ]; then
    pull_one "A " "$DELTACTL" "$item"
    pull_one "B " "$DELTACTL_B" "$item"
  else
    pull_one "" "$DELTACTL" "$item"
  fi
done
# Per binary and N: median [min, max] over the items.
echo "summary: median [min, max] per binary and --streams"
sort -k1,1 -k2,2 -s "$TMP/summary" | awk '
  function stats(a, k,   m, i, j, t) {  # (POSIX awk: no asort) insertion sort, then median
    for (i = 1; i <= k; i++) m[i] = a[i]
    for (i = 2; i <= k; i++) for (j = i; j > 1 && m[j - 1] > m[j]; j--) { t = m[j]; m[j] = m[j - 1]; m[j - 1] = t }
    return sprintf("%.3f [%.3f, %.3f]", (k % 2 ? m[(k + 1) / 2] : (m[k / 2] + m[k / 2 + 1]) / 2), m[1], m[k]) }
  function flush() {
    if (k) printf "%s --streams %-6s x%d  GB/s %s   client CPU s/GB %s   server CPU s/GB %s\n", key1, key2, k, stats(r, k), stats(c, k), stats(sv, k)
    delete r; delete c; delete sv; k = 0 }
  { if ($1 != key1 || $2 != key2) { flush(); key1 = $1; key2 = $2 }
    k++; r[k] = $3; c[k] = $4; sv[k] = $5 }
  END { flush() }'
