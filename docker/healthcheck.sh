#!/usr/bin/env bash
# gRPC health probe for deltaserved (Docker HEALTHCHECK; installed as deltaserve-healthcheck).
#   healthcheck.sh [ADDR [SERVICE]]
# Sends grpc.health.v1.Health/Check over HTTP/2 with curl (no extra gRPC tool in the image)
# and exits 0 only when the reply is grpc-status 0 with status SERVING.
# ADDR defaults to the port of $DELTASERVE_LISTEN on loopback (127.0.0.1:50051 if unset);
# SERVICE defaults to "" (the whole server); "deltaserve.v1.DeltaService" checks the service.
# With $DELTASERVE_TLS_CERT set, or $DELTASERVE_SECRETS_DIR (default /run/secrets) holding
# deltaserve_tls_cert, it speaks TLS (certificate not verified: a loopback probe).
# $HEALTHCHECK_TIMEOUT: seconds (default 3). Exit codes: 0 serving, 1 not serving/unreachable.
set -euo pipefail

listen="${DELTASERVE_LISTEN:-127.0.0.1:50051}"
port="${listen##*:}"
addr="${1:-127.0.0.1:$port}"
service="${2:-}"

# HealthCheckRequest{service}: field 1, wire type 2 (tag 0x0a), length, bytes; behind the
# 5-byte gRPC frame prefix (compressed flag 0, big-endian length). Names stay < 128 bytes.
n=${#service}
if ((n >= 126)); then echo "healthcheck: service name too long" >&2; exit 1; fi
if ((n == 0)); then
  req='\x00\x00\x00\x00\x00'
else
  req=$(printf '\\x00\\x00\\x00\\x00\\x%02x\\x0a\\x%02x' $((n + 2)) "$n")$service
fi

# TLS exactly when the daemon has it: DELTASERVE_TLS_CERT set, or (as entrypoint.sh does)
# the certificate found in the secrets directory.
cert="${DELTASERVE_TLS_CERT:-}"
if [[ -z "$cert" && -f "${DELTASERVE_SECRETS_DIR:-/run/secrets}/deltaserve_tls_cert" ]]; then
  cert="${DELTASERVE_SECRETS_DIR:-/run/secrets}/deltaserve_tls_cert"
fi
scheme=http; tls=(--http2-prior-knowledge)
if [[ -n "$cert" ]]; then scheme=https; tls=(--http2 --insecure); fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2059  # $req is a printf format of escapes by construction
printf "$req" >"$tmp/req"
if ! curl -sS --max-time "${HEALTHCHECK_TIMEOUT:-3}" "${tls[@]}" -X POST \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$tmp/req" -D "$tmp/headers" -o "$tmp/body" \
    "$scheme://$addr/grpc.health.v1.Health/Check" 2>"$tmp/err"; then
  echo "healthcheck: $addr unreachable: $(cat "$tmp/err")" >&2
  exit 1
fi
# grpc-status comes in the trailers (or in the headers of a trailers-only reply).
code=$(tr -d '\r' <"$tmp/headers" | awk -F': *' 'tolower($1) == "grpc-status" {print $2}' | tail -n1)
body=$(od -An -v -tx1 "$tmp/body" | tr -d ' \n')
# HealthCheckResponse{status: SERVING(1)} = frame 00 00000002, then 08 01.
if [[ "$code" == "0" && "$body" == "00000000020801" ]]; then
  echo "healthcheck: $addr ${service:-<server>} SERVING"
  exit 0
fi
echo "healthcheck: $addr ${service:-<server>} not serving (grpc-status '${code}', reply ${body:-empty})" >&2
exit 1
