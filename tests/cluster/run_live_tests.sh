#!/usr/bin/env bash
# Runs the cluster unit tests against a real loopback Swift (S3 API) and etcd
# (tests/cluster/cluster_lib.sh). Exit 77 (ctest: skipped) when the packages are absent.
# Usage: tests/cluster/run_live_tests.sh BUILD_DIR/tests/cluster
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?usage: run_live_tests.sh TEST_BIN_DIR}
# shellcheck source=tests/cluster/cluster_lib.sh
source "$here/cluster_lib.sh"
if ! why=$(cluster_have_packages); then
  echo "SKIP: $why"
  exit 77
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/deltaserve-cluster.XXXXXX")
trap 'cluster_down; rm -rf "$dir"' EXIT
# Each wait of cluster_up (a condition: the servers answer) may take this long; the
# whole start took 34-38 s on the 2-core VM at load 10-12.
export CLUSTER_START_TIMEOUT=180
start=$SECONDS
if ! cluster_up "$dir"; then
  tail -n 20 "$dir"/*.log
  exit 1
fi
echo "cluster up in $((SECONDS - start)) s: S3 $S3_ENDPOINT, etcd $ETCD_ENDPOINT"
# A forwarder to S3 that a test may stop (SIGSTOP) to make the object store hang.
fwd_port=$(cluster_free_port)
cluster_forward s3fwd "$fwd_port" "${S3_ENDPOINT#http://}"
# shellcheck disable=SC2154  # CLUSTER_PID_s3fwd: set by cluster_start (eval)
export S3_FORWARDER_ENDPOINT="http://127.0.0.1:$fwd_port" S3_FORWARDER_PID="$CLUSTER_PID_s3fwd"
rc=0
for t in cluster_s3_client_test cluster_task_pointers_test cluster_cluster_store_test \
  ../server/server_server_cluster_test; do
  "$bin/$t" --gtest_brief=1 || rc=1
done
exit $rc
