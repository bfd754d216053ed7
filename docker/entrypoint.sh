#!/usr/bin/env bash
# Container entrypoint of the deltaserve image (docker/Dockerfile); also runs outside Docker
# (tests/deploy/test_entrypoint.py runs it with the compose file's environment).
#
#   entrypoint.sh [DELTASERVED_FLAG...]   maps DELTASERVE_* variables to deltaserved flags and
#                                         execs deltaserved (PID 1 gets SIGTERM and drains)
#   entrypoint.sh healthcheck [ADDR]      gRPC health probe (docker/healthcheck.sh)
#   entrypoint.sh deltactl ARGS...        runs the client, e.g. `docker compose run deltaserved
#                                         deltactl list --server deltaserved:50051`
#   entrypoint.sh COMMAND ARGS...         runs any other command (a shell for debugging)
#
# Variables (each maps to the flag of the same name, see deploy/README.md; a flag given on the
# command line wins over its variable):
#   DELTASERVE_BASE DELTASERVE_DB DELTASERVE_LISTEN DELTASERVE_METRICS_LISTEN DELTASERVE_CONFIG
#   DELTASERVE_TLS_CERT DELTASERVE_TLS_KEY DELTASERVE_CACHE_BYTES DELTASERVE_WORKERS
#   DELTASERVE_CHUNK_BYTES DELTASERVE_PREFETCH_TENSORS DELTASERVE_MAX_UPLOAD_BYTES DELTASERVE_PRELOAD
#   DELTASERVE_DRAIN_SECONDS DELTASERVE_LOG_FORMAT
# Secrets are files, never values in the environment or the image: when DELTASERVE_CONFIG,
# DELTASERVE_TLS_CERT or DELTASERVE_TLS_KEY is unset and $DELTASERVE_SECRETS_DIR (default
# /run/secrets, where compose and Kubernetes mount secrets) holds deltaserve_config,
# deltaserve_tls_cert or deltaserve_tls_key, that file is used.
# DELTASERVED_BIN / DELTACTL_BIN name the binaries (default: found on PATH).
# Exit codes: those of deltaserved; 64 for a configuration error found here.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "entrypoint: $*" >&2; exit 64; }

case "${1:-}" in
  healthcheck)
    shift
    if [[ -x "$here/healthcheck.sh" ]]; then exec "$here/healthcheck.sh" "$@"; fi
    exec deltaserve-healthcheck "$@"
    ;;
  deltactl)
    shift
    exec "${DELTACTL_BIN:-deltactl}" "$@"
    ;;
  "" | -*) ;;  # deltaserved flags (or none): fall through
  *) exec "$@" ;;
esac

secrets_dir="${DELTASERVE_SECRETS_DIR:-/run/secrets}"
for pair in CONFIG:deltaserve_config TLS_CERT:deltaserve_tls_cert TLS_KEY:deltaserve_tls_key; do
  var="DELTASERVE_${pair%%:*}"
  file="$secrets_dir/${pair#*:}"
  if [[ -z "${!var:-}" && -f "$file" ]]; then
    export "$var=$file"
  fi
done

# True when the command line already carries --flag or --flag=VALUE.
has_flag() {
  local flag="$1" a
  for a in "${cmdline[@]}"; do
    [[ "$a" == "$flag" || "$a" == "$flag="* ]] && return 0
  done
  return 1
}

cmdline=("$@")
args=()
for name in BASE DB LISTEN METRICS_LISTEN CONFIG TLS_CERT TLS_KEY CACHE_BYTES WORKERS \
            CHUNK_BYTES PREFETCH_TENSORS MAX_UPLOAD_BYTES PRELOAD DRAIN_SECONDS LOG_FORMAT; do
  var="DELTASERVE_$name"
  flag="--$(tr 'A-Z_' 'a-z-' <<<"$name")"
  # METRICS_LISTEN may be set but empty ("" turns the metrics endpoint off).
  [[ -n "${!var+x}" ]] || continue
  [[ -n "${!var}" || "$name" == METRICS_LISTEN ]] || continue
  has_flag "$flag" && continue
  if [[ -z "${!var}" ]]; then
    # CLI11 refuses "--flag=" and ignores an empty variable: only "--flag ''" means off.
    args+=("$flag" "")
  else
    args+=("$flag=${!var}")
  fi
done

# Checks that turn a missing mount into one clear line instead of a daemon start-up error.
value_of() {  # value of --flag from args or the command line, last one wins
  local flag="$1" v="" a prev=""
  for a in "${args[@]}" "${cmdline[@]}"; do
    if [[ "$prev" == "$flag" ]]; then v="$a"; fi
    if [[ "$a" == "$flag="* ]]; then v="${a#"$flag="}"; fi
    prev="$a"
  done
  printf '%s' "$v"
}
base=$(value_of --base)
[[ -n "$base" ]] || die "no base model: set DELTASERVE_BASE or --base (mount the model, e.g. at /models/base.safetensors)"
[[ -e "$base" ]] || die "base model $base does not exist (is the model volume mounted?)"
for flag in --config --tls-cert --tls-key; do
  f=$(value_of "$flag")
  if [[ -n "$f" && ! ( -f "$f" && -r "$f" ) ]]; then die "$flag $f is not a readable file (is the secret mounted?)"; fi
done
cert=$(value_of --tls-cert); key=$(value_of --tls-key)
if [[ -n "$cert" && -z "$key" || -z "$cert" && -n "$key" ]]; then
  die "TLS needs both DELTASERVE_TLS_CERT and DELTASERVE_TLS_KEY (or neither)"
fi
db=$(value_of --db)
if [[ -n "$db" ]]; then
  mkdir -p "$db" 2>/dev/null || die "cannot create the database directory $db"
  [[ -w "$db" ]] || die "database directory $db is not writable by uid $(id -u)"
fi

bin="${DELTASERVED_BIN:-deltaserved}"
echo "entrypoint: exec $bin ${args[*]} ${cmdline[*]}" >&2
exec "$bin" "${args[@]}" "${cmdline[@]}"
