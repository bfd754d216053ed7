#!/usr/bin/env bash
# End-to-end check of cluster mode on one machine, from Debian packages: Swift (S3 API)
# + etcd (tests/cluster/cluster_lib.sh), three deltaserved replicas in cluster mode
# behind HAProxy with the shipped deploy/haproxy/haproxy.cfg, then a fourth replica.
#   - push through HAProxy; pull every task from every replica and through HAProxy:
#     bit-identical to offline `deltactl decompress`; `list` identical on every replica
#   - a fourth, empty replica serves every task (cold-miss fetch time measured)
#   - kill -9 the replica that owns a task: pulls through HAProxy keep succeeding
#     (failover time measured); restarted, it serves again
#   - side files: t1 pushed with config.json + tokenizer.json; `pull --out-dir` from every
#     replica and through HAProxy writes them identical; `info` and `list` show them
#   - a single-stream pull through HAProxy whose replica is killed mid-stream resumes
#     by byte offset on the next replica (bit-identical)
#   - delete through one replica: gone on every replica (time measured)
#   - health: r3 reaches the object store through a forwarder; stopping the forwarder
#     turns r3's health NOT_SERVING and HAProxy marks r3 DOWN through its agent check
#     while its TCP check still passes (r1, r2 stay UP, pulls keep working); resuming
#     it brings r3 back UP (both times measured)
#   - cluster cache metrics scraped from the empty fourth replica's /metrics
# With --figures it also measures aggregate pull throughput through HAProxy with 1, 2
# and 3 replicas (same run). Exit 77 if the packages are absent; 1 on any failure.
# Usage: tests/cluster/cluster_e2e.sh [--figures]   (BUILD=build by default)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BUILD=${BUILD:-$root/build}
DELTACTL=$BUILD/client/deltactl
DELTASERVED=$BUILD/server/deltaserved
FIGURES=0
[[ "${1:-}" == "--figures" ]] && FIGURES=1
# shellcheck source=tests/cluster/cluster_lib.sh
source "$here/cluster_lib.sh"
if ! why=$(cluster_have_packages); then
  echo "SKIP: $why"
  exit 77
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/deltaserve-e2e.XXXXXX")
cleanup() {
  cluster_down
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  exit 1
}
now_ms() { date +%s%3N; }

export CLUSTER_START_TIMEOUT=90
t0=$SECONDS
cluster_up "$dir" || {
  tail -n 20 "$dir"/*.log
  exit 1
}
echo "swift + etcd up in $((SECONDS - t0)) s"

# ---- models: a base of 8 x 512x1024 f32 (layer*) + 8 x 2048x1024 f32 (big*); three
# finetunes of the layer* tensors only (16 MiB merged each) and t5 of every tensor
# (80 MiB merged, for the single-stream resume below)
/usr/bin/python3 - "$dir" <<'PY'
import json, struct, sys
import numpy as np
d = sys.argv[1]
def save(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = a.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
rng = np.random.default_rng(0)
base = {f"layer{i}.w": rng.standard_normal((512, 1024), dtype=np.float32) * 0.05 for i in range(8)}
big = {f"big{i}.w": rng.standard_normal((2048, 1024), dtype=np.float32) * 0.05 for i in range(8)}
save(f"{d}/base.safetensors", {**base, **big})
def tune(tensors):
    return {k: v + rng.standard_normal(v.shape, dtype=np.float32) * 0.002 for k, v in tensors.items()}
for t in range(1, 4):
    save(f"{d}/ft{t}.safetensors", tune(base))
save(f"{d}/ft5.safetensors", tune({**base, **big}))
PY
# Side files of t1 (config, tokenizer: pushed with it, pulled with --out-dir).
mkdir -p "$dir/side"
printf '{"model_type": "llama", "hidden_size": 1024}\n' >"$dir/side/config.json"
head -c 3000000 /dev/urandom | base64 >"$dir/side/tokenizer.json"
for t in 1 2 3 5; do
  # t1..t3 lack the base's big tensors: --allow-missing leaves them out of the merged model.
  # t5 with Delta-DCT: the default codec (v2) takes far longer on its 2048x1024 tensors.
  codec=()
  [[ $t == 5 ]] && codec=(--codec dct)
  "$DELTACTL" compress --base "$dir/base.safetensors" --finetuned "$dir/ft$t.safetensors" \
    --allow-missing "${codec[@]}" --out "$dir/t$t.dds" >/dev/null 2>"$dir/compress.err" ||
    fail "compress t$t: $(tail -n 3 "$dir/compress.err")"
  "$DELTACTL" decompress --base "$dir/base.safetensors" --delta "$dir/t$t.dds" \
    --out "$dir/t$t.offline.safetensors" >/dev/null 2>&1 || fail "decompress t$t"
done

cat >"$dir/cluster.json" <<JSON
{"s3": {"endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$S3_BUCKET",
        "access_key": "$S3_ACCESS_KEY", "secret_key": "$S3_SECRET_KEY"},
 "etcd": {"endpoint": "$ETCD_ENDPOINT", "prefix": "e2e/"},
 "cache_bytes": 1073741824, "gc_grace_s": 3600}
JSON

# r3 reaches S3 through a forwarder that the health check stops (below).
S3_FWD_PORT=$(cluster_free_port)
cluster_forward s3fwd "$S3_FWD_PORT" "${S3_ENDPOINT#http://}"
sed "s|$S3_ENDPOINT|http://127.0.0.1:$S3_FWD_PORT|" "$dir/cluster.json" >"$dir/cluster3.json"

declare -A RPORT APORT MPORT
start_replica() {  # n
  local n=$1 config=$dir/cluster.json
  [[ -n "${RPORT[$n]:-}" ]] || RPORT[$n]=$(cluster_free_port)
  [[ -n "${APORT[$n]:-}" ]] || APORT[$n]=$(cluster_free_port)
  [[ -n "${MPORT[$n]:-}" ]] || MPORT[$n]=$(cluster_free_port)
  [[ $n == 3 ]] && config=$dir/cluster3.json
  cluster_start "r$n" "$DELTASERVED" --base "$dir/base.safetensors" --db "$dir/r$n" \
    --listen "127.0.0.1:${RPORT[$n]}" --metrics-listen "127.0.0.1:${MPORT[$n]}" \
    --agent-listen "127.0.0.1:${APORT[$n]}" --health-interval-seconds 0.5 \
    --cluster-config "$config" --workers 2 --db-min-free-bytes 67108864
  cluster_wait 60 "$DELTACTL" list --server "127.0.0.1:${RPORT[$n]}" ||
    { tail -n 20 "$dir/r$n.log"; fail "replica r$n did not start"; }
}
start_haproxy() {  # name port replicas...: the shipped config with only these servers
  local name=$1 port=$2 keep
  shift 2
  keep=$(printf '|r%s' "$@")
  grep -v -E "^  server r[0-9]" "$root/deploy/haproxy/haproxy.cfg" >"$dir/$name.cfg"
  grep -E "^  server (${keep:1}) " "$root/deploy/haproxy/haproxy.cfg" >>"$dir/$name.cfg"
  # HAProxy's view of the servers, for the health checks below: CSV stats over HTTP.
  STATS_PORT[$name]=$(cluster_free_port)
  printf 'listen stats\n  bind 127.0.0.1:%s\n  mode http\n  stats enable\n  stats uri /stats\n' \
    "${STATS_PORT[$name]}" >>"$dir/$name.cfg"
  DELTASERVE_LB_BIND="127.0.0.1:$port" DELTASERVE_R1="127.0.0.1:${RPORT[1]}" \
    DELTASERVE_R2="127.0.0.1:${RPORT[2]:-1}" DELTASERVE_R3="127.0.0.1:${RPORT[3]:-1}" \
    DELTASERVE_R1_AGENT_PORT="${APORT[1]}" DELTASERVE_R2_AGENT_PORT="${APORT[2]:-1}" \
    DELTASERVE_R3_AGENT_PORT="${APORT[3]:-1}" \
    cluster_start "$name" haproxy -db -f "$dir/$name.cfg"
  cluster_wait 10 "$DELTACTL" list --server "127.0.0.1:$port" || fail "haproxy $name did not start"
}
declare -A STATS_PORT
# "STATUS CHECK AGENT" of server $2 in HAProxy $1's stats, e.g. "DOWN L4OK L7STS".
lb_server_state() {
  curl -s "http://127.0.0.1:${STATS_PORT[$1]}/stats;csv" | awk -F, -v s="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
    $1 == "deltaserved" && $2 == s {
      print $col["status"], $col["check_status"], $col["agent_status"] }'
}
# Waits up to $3 s until server $2's status in HAProxy $1 starts with $4.
lb_wait_status() {
  local deadline=$((SECONDS + $3))
  until [[ "$(lb_server_state "$1" "$2")" == "$4"* ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}
pull_check() {  # server task label
  local out="$dir/pulled.$RANDOM.safetensors"
  "$DELTACTL" pull --server "$1" --task "$2" --out "$out" >/dev/null 2>"$dir/pull.err" ||
    fail "pull $2 from $3 ($1): $(tail -n 3 "$dir/pull.err")"
  cmp -s "$out" "$dir/$2.offline.safetensors" || fail "pull $2 from $3 differs from offline decompress"
  rm -f "$out"
}

for n in 1 2 3; do start_replica "$n"; done
LB_PORT=$(cluster_free_port)
start_haproxy lb "$LB_PORT" 1 2 3
LB="127.0.0.1:$LB_PORT"
echo "3 replicas + haproxy up at $((SECONDS - t0)) s"

# ---- push through HAProxy; pull from everywhere; list agrees
for t in t1 t2 t3 t5; do
  side=()
  [[ $t == t1 ]] && side=(--side-file "$dir/side/config.json" --side-file "$dir/side/tokenizer.json")
  "$DELTACTL" push --server "$LB" --task "$t" --in "$dir/$t.dds" "${side[@]}" >/dev/null ||
    fail "push $t"
done
for t in t1 t2 t3; do
  pull_check "$LB" "$t" haproxy
  for n in 1 2 3; do pull_check "127.0.0.1:${RPORT[$n]}" "$t" "r$n"; done
done
echo "ok: 4 tasks pushed through haproxy; t1-t3 pulled bit-identical from r1, r2, r3 and haproxy"
for n in 1 2 3; do
  "$DELTACTL" list --json --server "127.0.0.1:${RPORT[$n]}" >"$dir/list$n.json"
done
if ! cmp -s "$dir/list1.json" "$dir/list2.json" || ! cmp -s "$dir/list1.json" "$dir/list3.json"; then
  fail "list differs between replicas: $(diff "$dir/list1.json" "$dir/list2.json" | head -5)"
fi
grep -c '"tenant"' "$dir/list1.json" | grep -qx 4 || fail "list does not show 4 tasks: $(cat "$dir/list1.json")"
grep -q '"tokenizer.json"' "$dir/list1.json" || fail "list does not show t1's side files"
echo "ok: list identical on r1, r2, r3 (side files listed)"
# ---- side files: pull --out-dir writes them, from every replica and through HAProxy
for server in "$LB" "127.0.0.1:${RPORT[1]}" "127.0.0.1:${RPORT[2]}" "127.0.0.1:${RPORT[3]}"; do
  rm -rf "$dir/outdir"
  "$DELTACTL" pull --server "$server" --task t1 --out-dir "$dir/outdir" >/dev/null 2>"$dir/pull.err" ||
    fail "pull --out-dir t1 from $server: $(tail -n 3 "$dir/pull.err")"
  for f in config.json tokenizer.json; do
    cmp -s "$dir/side/$f" "$dir/outdir/$f" || fail "side file $f pulled from $server differs"
  done
done
for n in 1 2 3; do
  "$DELTACTL" info --json --server "127.0.0.1:${RPORT[$n]}" --task t1 >"$dir/info$n.json" ||
    fail "info t1 on r$n"
  grep -q '"config.json"' "$dir/info$n.json" || fail "info t1 on r$n lacks its side files"
done
echo "ok: t1's side files pulled with --out-dir identical from r1, r2, r3 and haproxy; info lists them"

# ---- health: the agent check marks a replica DOWN that cannot reach the object store
for n in 1 2 3; do
  lb_wait_status lb "r$n" 10 UP || fail "r$n not UP in haproxy: $(lb_server_state lb "r$n")"
done
a=$(now_ms)
# shellcheck disable=SC2154  # CLUSTER_PID_s3fwd: set by cluster_start (eval)
kill -STOP "$CLUSTER_PID_s3fwd"
lb_wait_status lb r3 15 DOWN || fail "r3 not marked DOWN: $(lb_server_state lb r3)"
b=$(now_ms)
state3=$(lb_server_state lb r3)
# HAProxy says "DOWN (agent)" when the agent took it down; L4OK: TCP still connects.
[[ "$state3" == "DOWN (agent) L4OK "* ]] ||
  fail "r3 DOWN but not by its agent (TCP check failed?): $state3"
for n in 1 2; do
  [[ "$(lb_server_state lb "r$n")" == UP* ]] || fail "r$n not UP while r3 is down"
done
grep -q 'NOT_SERVING' "$dir/r3.log" || fail "r3 did not log NOT_SERVING"
"$root/docker/healthcheck.sh" "127.0.0.1:${RPORT[3]}" >/dev/null 2>&1 &&
  fail "r3's grpc.health.v1 says SERVING while it cannot reach the object store"
"$root/docker/healthcheck.sh" "127.0.0.1:${RPORT[1]}" >/dev/null 2>&1 ||
  fail "r1's grpc.health.v1 is not SERVING"
for t in t1 t2 t3; do pull_check "$LB" "$t" "haproxy with r3 down"; done
kill -CONT "$CLUSTER_PID_s3fwd"
lb_wait_status lb r3 15 UP || fail "r3 not back UP: $(lb_server_state lb r3)"
c=$(now_ms)
echo "figure: object store unreachable from r3: haproxy marked r3 DOWN by its agent check after $((b - a)) ms (state: $state3); back UP $((c - b)) ms after it was reachable again"
echo "ok: agent check took r3 out while its TCP check passed; r1, r2 stayed UP; pulls kept working"

# ---- a fourth, empty replica serves every task; cold vs warm pull
start_replica 4
for t in t1 t2 t3; do
  a=$(now_ms)
  pull_check "127.0.0.1:${RPORT[4]}" "$t" r4
  b=$(now_ms)
  pull_check "127.0.0.1:${RPORT[4]}" "$t" r4
  c=$(now_ms)
  echo "figure: r4 (empty) pull $t: first (cold, fetched from S3) $((b - a)) ms, second (cached) $((c - b)) ms, container $(stat -c %s "$dir/$t.dds") bytes"
done
echo "ok: fourth empty replica served every task"
# Its cache metrics (published once a second): 3 misses, the 3 containers and t1's side
# files fetched.
fetched=$(($(stat -c %s "$dir/side/config.json") + $(stat -c %s "$dir/side/tokenizer.json")))
for t in t1 t2 t3; do fetched=$((fetched + $(stat -c %s "$dir/$t.dds"))); done
metric() { curl -s "http://127.0.0.1:${MPORT[4]}/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
deadline=$((SECONDS + 5))
until [[ "$(metric deltaserve_cluster_cache_misses_total)" == 3 ]]; do
  ((SECONDS < deadline)) || fail "r4 metrics: misses $(metric deltaserve_cluster_cache_misses_total), want 3"
  sleep 0.2
done
[[ "$(metric deltaserve_cluster_fill_bytes_total)" == "$fetched" ]] ||
  fail "r4 metrics: fill bytes $(metric deltaserve_cluster_fill_bytes_total), want $fetched"
[[ "$(metric deltaserve_cluster_cached_bytes)" == "$fetched" ]] ||
  fail "r4 metrics: cached bytes $(metric deltaserve_cluster_cached_bytes), want $fetched"
echo "ok: r4 /metrics: 3 cache misses, $fetched bytes filled (containers and side files), hits $(metric deltaserve_cluster_cache_hits_total), fill seconds $(metric deltaserve_cluster_fill_seconds_total), watch lag $(metric deltaserve_cluster_watch_lag_seconds) s"

# ---- figures: aggregate throughput through HAProxy with 1, 2, 3 replicas
if ((FIGURES)); then
  merged=$(stat -c %s "$dir/t1.offline.safetensors")
  for k in 1 2 3; do
    port=$(cluster_free_port)
    # shellcheck disable=SC2046
    start_haproxy "lb$k" "$port" $(seq 1 "$k")
    for t in t1 t2 t3; do pull_check "127.0.0.1:$port" "$t" "lb$k"; done  # warm the owners
    a=$(now_ms)
    pids=()
    for round in 1 2; do
      for t in t1 t2 t3; do
        "$DELTACTL" pull --server "127.0.0.1:$port" --task "$t" \
          --out "$dir/fig.$k.$round.$t.safetensors" >/dev/null 2>"$dir/fig.$k.$round.$t.err" &
        pids+=($!)
      done
    done
    for p in "${pids[@]}"; do
      wait "$p" || fail "figure pull failed: $(tail -q -n 2 "$dir"/fig."$k".*.err)"
    done
    b=$(now_ms)
    rm -f "$dir"/fig.*.safetensors
    awk -v k="$k" -v n=6 -v bytes="$merged" -v ms=$((b - a)) 'BEGIN {
      printf "figure: %d replica(s) behind haproxy: 6 concurrent pulls of %.1f MiB in %d ms = %.1f MiB/s aggregate\n",
        k, bytes / 1048576, ms, n * bytes / 1048576 / (ms / 1000) }'
  done
fi

# ---- kill -9 the owner of t1: pulls through HAProxy keep working
"$DELTACTL" pull --server "$LB" --task t1 --out "$dir/owner.safetensors" >/dev/null 2>&1
owner=""
for n in 1 2 3; do
  if grep '"method":"StreamWeights"' "$dir/r$n.log" 2>/dev/null | grep -q '"task":"t1"' ||
    grep 'StreamWeights' "$dir/r$n.log" | grep -q 't1'; then
    c=$(grep 'StreamWeights' "$dir/r$n.log" | grep -c 't1')
    if [[ -z "$owner" ]] || ((c > best)); then owner=$n best=$c; fi
  fi
done
[[ -n "$owner" ]] || fail "cannot tell which replica served t1"
pid_var="CLUSTER_PID_r$owner"
a=$(now_ms)
kill -9 "${!pid_var}"
wait "${!pid_var}" 2>/dev/null || true  # no "Killed" line from bash
tries=0
until "$DELTACTL" pull --server "$LB" --task t1 --out "$dir/failover.safetensors" >/dev/null 2>&1; do
  tries=$((tries + 1))
  ((tries < 100)) || fail "no pull of t1 through haproxy after killing r$owner"
  sleep 0.05
done
b=$(now_ms)
cmp -s "$dir/failover.safetensors" "$dir/t1.offline.safetensors" || fail "failover pull differs"
echo "figure: kill -9 r$owner (t1's owner): first successful pull through haproxy $((b - a)) ms later ($tries failed tries before)"
for t in t1 t2 t3; do pull_check "$LB" "$t" "haproxy without r$owner"; done
echo "ok: pulls through haproxy keep succeeding without r$owner"
start_replica "$owner"
pull_check "127.0.0.1:${RPORT[$owner]}" t1 "r$owner restarted"
echo "ok: r$owner restarted from its cache and serves t1"

# ---- a single-stream pull cut by the death of its replica resumes on the next one
# t5 (80 MiB merged) is pulled through HAProxy only, so its owner is the one replica
# that logged its StreamWeights calls. The client is stopped while its stream runs
# (the owner's streams_in_flight says so), the owner is killed, the client continues:
# it reads what had arrived, sees the stream cut and resumes by byte offset through
# HAProxy on the next replica of the ring (PullOptions.range_retries).
pull_check "$LB" t5 haproxy
owner5=""
for n in 1 2 3; do
  grep 'StreamWeights' "$dir/r$n.log" | grep -q 't5' && owner5=$n
done
[[ -n "$owner5" ]] || fail "cannot tell which replica served t5"
in_flight() {
  curl -s "http://127.0.0.1:${MPORT[$owner5]}/metrics" |
    awk '$1 == "deltaserve_streams_in_flight" { print int($2) }'
}
"$DELTACTL" pull --json --server "$LB" --task t5 --out "$dir/resume.safetensors" \
  >"$dir/resume.json" 2>"$dir/resume.err" &
pull_pid=$!
deadline=$((SECONDS + 20))
until (($(in_flight || echo 0) >= 1)); do
  ((SECONDS < deadline)) || fail "t5's stream never showed on r$owner5"
  sleep 0.01
done
kill -STOP "$pull_pid"
sleep 0.5  # the owner fills the flow-control windows and waits
a=$(now_ms)
pid_var="CLUSTER_PID_r$owner5"
kill -9 "${!pid_var}"
wait "${!pid_var}" 2>/dev/null || true
kill -CONT "$pull_pid"
wait "$pull_pid" || fail "single-stream pull of t5 did not survive r$owner5's death: $(tail -n 3 "$dir/resume.err")"
b=$(now_ms)
cmp -s "$dir/resume.safetensors" "$dir/t5.offline.safetensors" || fail "resumed pull of t5 differs"
resumed=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["resumed"])' "$dir/resume.json")
((resumed >= 1)) || fail "the pull of t5 did not resume (resumed=$resumed): was it cut at all?"
echo "figure: single-stream pull of t5 ($(stat -c %s "$dir/t5.offline.safetensors") bytes) cut by kill -9 of r$owner5: resumed $resumed time(s) through haproxy, done $((b - a)) ms after the kill, bit-identical"
rm -f "$dir/resume.safetensors"
start_replica "$owner5"
echo "ok: a single-stream pull resumed on another replica after its replica died"

# ---- delete through one replica: gone everywhere
a=$(now_ms)
"$DELTACTL" delete --server "127.0.0.1:${RPORT[1]}" --task t3 >/dev/null || fail "delete t3"
b=$(now_ms)
for n in 1 2 3 4; do
  until ! "$DELTACTL" info --server "127.0.0.1:${RPORT[$n]}" --task t3 >/dev/null 2>&1; do
    (($(now_ms) - b < 10000)) || fail "t3 still served by r$n 10 s after its delete"
  done
done
c=$(now_ms)
echo "figure: delete t3 took $((b - a)) ms; gone on r1..r4 within $((c - b)) ms after it returned (deltactl info polls)"
"$DELTACTL" pull --server "$LB" --task t3 --out "$dir/x.safetensors" >/dev/null 2>&1 &&
  fail "t3 still pullable through haproxy"
echo "PASS: cluster e2e in $((SECONDS - t0)) s"
