#!/usr/bin/env bash
# A loopback scale-out test cluster from Debian packages, without root and without
# touching /etc: OpenStack Swift (account, container and object servers on a one-replica
# ring, the proxy with its s3api middleware and tempauth) as the S3 object store, and
# one etcd member. Everything lives under one temporary directory; ports come from the
# OS; every process is started by this file and stopped by cluster_down (call it from an
# EXIT trap).
#
# Source it, then:
#   cluster_have_packages || skip        # 0 if every binary is installed
#   cluster_up "$dir"                     # starts Swift + etcd, waits until they answer
#   ... use $S3_ENDPOINT $S3_ACCESS_KEY $S3_SECRET_KEY $S3_BUCKET $ETCD_ENDPOINT ...
#   cluster_down
# cluster_up gives up (returns 1, logs in $dir/*.log) after CLUSTER_START_TIMEOUT s.
#
# Swift keeps object metadata in extended attributes: the directory must be on a
# filesystem with user xattrs (ext4, xfs, btrfs, tmpfs >= 6.6); cluster_up checks.

CLUSTER_START_TIMEOUT=${CLUSTER_START_TIMEOUT:-30}
CLUSTER_PIDS=()

cluster_have_packages() {
  local b
  for b in etcd swift-ring-builder swift-proxy-server swift-object-server \
    swift-container-server swift-account-server haproxy curl; do
    if ! command -v "$b" >/dev/null 2>&1; then
      echo "missing: $b (deploy/install-deps.sh installs it)"
      return 1
    fi
  done
  /usr/bin/python3 -c 'import swift.common.middleware.s3api' 2>/dev/null || {
    echo "missing: python3-swift's s3api middleware"
    return 1
  }
}

CLUSTER_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# A free TCP port on 127.0.0.1, drawn outside the kernel's ephemeral range
# (tests/deploy/deploy_lib.py free_port): a port bound to 0 and released could be given
# to a parallel test's outgoing connection before a slow server (Swift takes seconds to
# start) binds it, and the start failed.
cluster_free_port() {
  /usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import deploy_lib; print(deploy_lib.free_port())' \
    "$CLUSTER_LIB_DIR/../deploy"
}

# Waits until `cmd...` succeeds, up to $1 seconds. 1 on timeout.
cluster_wait() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

cluster_start() {  # name, command...: runs it in the background, log in $CLUSTER_DIR/name.log
  local name=$1
  shift
  "$@" >"$CLUSTER_DIR/$name.log" 2>&1 &
  CLUSTER_PIDS+=($!)
  eval "CLUSTER_PID_${name//-/_}=$!"
}

cluster_swift_conf() {  # kind port
  cat <<EOF
[DEFAULT]
swift_dir = $CLUSTER_DIR/swift
devices = $CLUSTER_DIR/srv
mount_check = false
bind_ip = 127.0.0.1
bind_port = $2
workers = 0
user = $(id -un)
log_name = $1
log_level = ${CLUSTER_LOG_LEVEL:-WARNING}

[pipeline:main]
pipeline = $1-server

[app:$1-server]
use = egg:swift#$1
EOF
}

cluster_up() {
  CLUSTER_DIR=$1
  mkdir -p "$CLUSTER_DIR/swift" "$CLUSTER_DIR/srv/d1" "$CLUSTER_DIR/etcd"
  if ! /usr/bin/python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.t", b"1")' \
    "$CLUSTER_DIR/srv/d1" 2>/dev/null; then
    echo "cluster_up: $CLUSTER_DIR has no user xattrs (Swift needs them)" >&2
    return 1
  fi
  local acct_port cont_port obj_port proxy_port etcd_port peer_port kind
  acct_port=$(cluster_free_port)
  cont_port=$(cluster_free_port)
  obj_port=$(cluster_free_port)
  proxy_port=$(cluster_free_port)
  etcd_port=$(cluster_free_port)
  peer_port=$(cluster_free_port)

  cat >"$CLUSTER_DIR/swift/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = deltaserve-test
swift_hash_path_prefix = deltaserve-test
[storage-policy:0]
name = gold
default = yes
EOF
  local -A ports=([account]=$acct_port [container]=$cont_port [object]=$obj_port)
  for kind in account container object; do
    (
      cd "$CLUSTER_DIR/swift" &&
        swift-ring-builder "$kind.builder" create 4 1 1 &&
        swift-ring-builder "$kind.builder" add "r1z1-127.0.0.1:${ports[$kind]}/d1" 1 &&
        swift-ring-builder "$kind.builder" rebalance
    ) >>"$CLUSTER_DIR/rings.log" 2>&1 || {
      echo "cluster_up: ring $kind failed (see $CLUSTER_DIR/rings.log)" >&2
      return 1
    }
    cluster_swift_conf "$kind" "${ports[$kind]}" >"$CLUSTER_DIR/swift/$kind-server.conf"
    cluster_start "swift-$kind" "swift-$kind-server" "$CLUSTER_DIR/swift/$kind-server.conf" -v
  done
  # s3api needs slo (multipart uploads) and tempauth needs a memcache client; no
  # memcached runs, so every cache lookup misses (tempauth then checks each request).
  cat >"$CLUSTER_DIR/swift/proxy-server.conf" <<EOF
[DEFAULT]
swift_dir = $CLUSTER_DIR/swift
bind_ip = 127.0.0.1
bind_port = $proxy_port
workers = 0
user = $(id -un)
log_name = proxy
log_level = ${CLUSTER_LOG_LEVEL:-WARNING}

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:9
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
EOF
  cluster_start swift-proxy swift-proxy-server "$CLUSTER_DIR/swift/proxy-server.conf" -v
  cluster_start etcd etcd --name c0 --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "c0=http://127.0.0.1:$peer_port" --log-level warn

  export S3_ENDPOINT="http://127.0.0.1:$proxy_port" S3_REGION=us-east-1
  export S3_ACCESS_KEY="test:tester" S3_SECRET_KEY=testing S3_BUCKET=deltaserve
  export ETCD_ENDPOINT="http://127.0.0.1:$etcd_port"
  # The proxy's health check answers before the storage servers listen: wait for those
  # too (any HTTP answer will do).
  for kind in account container object; do
    cluster_wait "$CLUSTER_START_TIMEOUT" curl -s -o /dev/null "http://127.0.0.1:${ports[$kind]}/" || {
      echo "cluster_up: swift $kind server did not come up (logs in $CLUSTER_DIR)" >&2
      return 1
    }
  done
  if ! cluster_wait "$CLUSTER_START_TIMEOUT" curl -sf "$S3_ENDPOINT/healthcheck" ||
    ! cluster_wait "$CLUSTER_START_TIMEOUT" curl -sf "$ETCD_ENDPOINT/health"; then
    echo "cluster_up: Swift or etcd did not come up in ${CLUSTER_START_TIMEOUT}s" \
      "(logs in $CLUSTER_DIR)" >&2
    return 1
  fi
  # The bucket is created by its first client (S3Client::CreateBucket).
}

# A TCP forwarder 127.0.0.1:$2 -> $3 (host:port) in the background, named $1 like
# cluster_start. Stop it with SIGSTOP to make the target unreachable through it (new
# connections hang, as behind a dead network), SIGCONT to restore it.
cluster_forward() {
  local name=$1 port=$2 target=$3
  cluster_start "$name" /usr/bin/python3 -c '
import socket, sys, threading
host, port = sys.argv[2].rsplit(":", 1)
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(128)
while True:
    c, _ = srv.accept()
    try:
        u = socket.create_connection((host, int(port)))
    except OSError:
        c.close()
        continue
    for a, b in ((c, u), (u, c)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
' "$port" "$target"
  cluster_wait 10 /usr/bin/python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()' "$port"
}

# Stops every process cluster_up (or cluster_start) started: SIGTERM (and SIGCONT),
# then SIGKILL after 5 s.
cluster_down() {
  local pid deadline
  for pid in "${CLUSTER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true  # one stopped by a test would not see SIGTERM
  done
  deadline=$((SECONDS + 5))
  for pid in "${CLUSTER_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true  # reaped here: no "Killed" line from bash
  done
  CLUSTER_PIDS=()
}
