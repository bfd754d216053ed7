#!/usr/bin/env bash
# Installs every Debian 12 package deltaserve needs to build, test, benchmark and deploy.
# Idempotent: packages already present are skipped by apt; safe to run on every build.
# Usage: deploy/install-deps.sh [--build-only]   (--build-only: what a Release build needs)
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  protobuf-compiler libprotobuf-dev protobuf-compiler-grpc libgrpc++-dev
  libabsl-dev librocksdb-dev libopenblas-dev prometheus-cpp-dev libmicrohttpd-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcurl4-openssl-dev libssl-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libxxhash-dev libre2-dev libhtscodecs-dev
)
# Tests: a real Prometheus server and promtool, docker-compose for `config` validation,
# curl/openssl/shellcheck/python3-yaml for the deployment tests; linux-perf to profile
# the benchmarks (`perf record -e cpu-clock`: VMs often lack hardware counters); for
# the fidelity harness (tests/eval) Python with numpy/torch/matplotlib, real face
# photographs (python3-skimage's data) and a labeled text set (the fortunes packages).
# The Python client (python/deltaserve): gRPC, protobuf and xxhash modules, and
# pybind11 with the Python headers for its C++ codec binding (built only when pybind11
# is found). Clang and libFuzzer for the fuzz targets (tests/fuzz/run_fuzz.sh,
# build-fuzz/). Scale-out (deploy/README.md "Scaling out", tests/cluster): etcd for task
# pointers, HAProxy for routing, OpenStack Swift (proxy with its s3api middleware plus a
# one-replica account/container/object ring) as the S3 object store.
TEST_PKGS=(
  prometheus docker-compose curl openssl shellcheck python3-yaml linux-perf
  python3 python3-numpy python3-torch python3-matplotlib python3-pil
  python3-skimage fortunes fortunes-min fortune-mod
  python3-grpcio python3-protobuf python3-xxhash pybind11-dev python3-dev
  clang libfuzzer-14-dev
  etcd-server etcd-client haproxy swift swift-proxy swift-object swift-container swift-account
)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" != "--build-only" ]]; then
  want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
