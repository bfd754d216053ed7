"""deploy_entrypoint: docker/entrypoint.sh run outside Docker with the deltaserved service's
environment from `docker-compose config` of deploy/docker-compose.yml, its volumes and
secrets mapped to temporary directories (the example secrets) and its ports to free ones.
Asserts: every variable becomes its flag; the script execs deltaserved (same PID); the
compose health check command (docker/healthcheck.sh, gRPC health) reports SERVING; deltactl
works through the entrypoint; logs are JSON lines; SIGTERM gives a clean exit 0 and the
health check then fails. Also: flags on the command line win over variables, secrets are
found in the secrets directory, and a missing base or half a TLS pair is refused (exit 64)."""
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")
entrypoint = os.path.join(d.DOCKER_DIR, "entrypoint.sh")

cfg, _ = d.compose_config()
svc = cfg["services"]["deltaserved"]
compose_env = {k: str(v) for k, v in svc["environment"].items()}


def exec_line(log_text):
    lines = [l for l in log_text.splitlines() if l.startswith("entrypoint: exec ")]
    d.check(lines, "the entrypoint logged no exec line:\n" + log_text)
    return lines[0][len("entrypoint: exec "):].split()


with tempfile.TemporaryDirectory(prefix="deploy-entrypoint-") as tmp:
    # Container paths -> host paths: volumes and secrets of the compose service.
    mapping = {}
    for v in svc["volumes"]:
        src, target = v.split(":")[0], v.split(":")[1]
        host = os.path.join(tmp, "volumes", os.path.basename(src.rstrip("/")))
        os.makedirs(host, exist_ok=True)
        mapping[target] = host
    secrets_dir = os.path.join(tmp, "secrets")
    os.makedirs(secrets_dir)
    for s in svc["secrets"]:
        name = s["source"]
        real = cfg["secrets"][name]["file"]  # deploy/secrets/<f>: the example stands in
        example = os.path.join(d.DEPLOY_DIR, "secrets.example", os.path.basename(real))
        d.check(os.path.exists(example), f"no example for secret {name} ({example})")
        shutil.copy(example, os.path.join(secrets_dir, name))
        mapping[s.get("target") or f"/run/secrets/{name}"] = os.path.join(secrets_dir, name)
    env_map = {}
    for k, v in compose_env.items():
        for target in sorted(mapping, key=len, reverse=True):
            if v == target or v.startswith(target + "/"):
                v = mapping[target] + v[len(target):]
                break
        # Port 0: the daemon binds free ports itself and logs them (serving_ports).
        if k in ("DELTASERVE_LISTEN", "DELTASERVE_METRICS_LISTEN"):
            v = v.rsplit(":", 1)[0] + ":0"
        env_map[k] = v
    # The base model the compose file expects, in the models volume.
    base_host = env_map["DELTASERVE_BASE"]
    base, _ = d.make_model_pair(tmp)
    os.makedirs(os.path.dirname(base_host), exist_ok=True)
    shutil.copy(base, base_host)
    d.log("compose environment, mapped: " + " ".join(f"{k}={v}" for k, v in sorted(env_map.items())))
    env = d.clean_env(dict(env_map, DELTASERVED_BIN=deltaserved, DELTACTL_BIN=deltactl))

    # --- 1. the real daemon through the entrypoint
    dm = d.Daemon([entrypoint], os.path.join(tmp, "entrypoint.log"), env=env)
    grpc_port, metrics_port = d.serving_ports(dm)
    addr = f"127.0.0.1:{grpc_port}"
    d.wait_until(lambda: d.healthcheck(addr, env)[0] == 0, 30, "compose health check SERVING", dm)
    rc, out = d.healthcheck(addr, env, "deltaserve.v1.DeltaService")
    d.check(rc == 0, f"health of deltaserve.v1.DeltaService: {out}")
    # The compose health check runs the command with the container's environment, no args
    # (the listen address with the port the daemon picked for the compose file's).
    listen = env_map["DELTASERVE_LISTEN"].rsplit(":", 1)[0] + f":{grpc_port}"
    r = subprocess.run([os.path.join(d.DOCKER_DIR, "healthcheck.sh")], env=dict(env, DELTASERVE_LISTEN=listen),
                       capture_output=True, text=True)
    d.check(r.returncode == 0 and "SERVING" in r.stdout, f"healthcheck without args: {r.stdout}{r.stderr}")
    d.log("health: " + r.stdout.strip())
    args = exec_line(dm.log_text())
    for k, v in env_map.items():
        flag = d.DAEMON_ENV[k]
        if v:
            d.check(f"{flag}={v}" in args, f"{k}={v} did not become {flag}={v}: {args}")
        elif k != "DELTASERVE_METRICS_LISTEN":
            d.check(not any(a.startswith(flag + "=") for a in args), f"empty {k} must not pass {flag}")
    d.check(os.path.realpath(f"/proc/{dm.pid}/exe") == os.path.realpath(deltaserved),
            f"PID {dm.pid} is {os.path.realpath(f'/proc/{dm.pid}/exe')}, not deltaserved (no exec?)")
    r = d.run([entrypoint, "deltactl", "list", "--server", addr, "--token", d.ACME_TOKEN], env=env,
              what="entrypoint.sh deltactl list")
    d.log("entrypoint.sh deltactl list: exit 0")
    status, text = d.http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    d.check(status == 200 and "deltaserve_build_info" in text, "metrics endpoint on the mapped port")
    logs = dm.log_text().splitlines()
    json_lines = []
    for l in logs:
        try:
            json_lines.append(json.loads(l))
        except ValueError:
            pass
    if env_map.get("DELTASERVE_LOG_FORMAT") == "json":
        d.check(json_lines, "DELTASERVE_LOG_FORMAT=json but no JSON log line:\n" + "\n".join(logs[-20:]))
    t0 = time.monotonic()
    code = dm.terminate(timeout=int(env_map.get("DELTASERVE_DRAIN_SECONDS", "30")) + 10)
    took = time.monotonic() - t0
    d.check(code == 0, f"SIGTERM: exit code {code}, wanted 0\n{dm.log_text()}")
    d.log(f"SIGTERM: clean exit 0 after {took:.2f} s; {len(json_lines)} JSON log lines")
    rc, out = d.healthcheck(addr, env)
    d.check(rc != 0, "health check must fail once the daemon is gone")
    dm.stop()
    d.check(os.listdir(mapping["/var/lib/deltaserve/db"]), "the RocksDB volume stayed empty")

    # --- 2. argument handling, with a stub daemon that prints its arguments
    stub = os.path.join(tmp, "stub-deltaserved")
    with open(stub, "w") as f:
        f.write('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    os.chmod(stub, stat.S_IRWXU)
    senv = dict(env, DELTASERVED_BIN=stub)
    r = d.run([entrypoint, "--workers", "2", "--log-format=text"], env=senv)
    got = r.stdout.split("\n")
    d.check("--workers" in got and "2" in got and not any(a.startswith("--workers=") for a in got)
            and "--log-format=text" in got and "--log-format=json" not in got,
            f"command-line flags must win over variables: {got}")
    r = d.run([entrypoint], env=dict(senv, DELTASERVE_METRICS_LISTEN=""))
    got = r.stdout.split("\n")
    i = got.index("--metrics-listen")
    d.check(got[i + 1] == "", f"empty DELTASERVE_METRICS_LISTEN must pass --metrics-listen '': {got}")
    senv2 = {k: v for k, v in senv.items() if k != "DELTASERVE_CONFIG"}
    senv2["DELTASERVE_SECRETS_DIR"] = secrets_dir
    r = d.run([entrypoint], env=senv2)
    d.check(f"--config={os.path.join(secrets_dir, 'deltaserve_config')}" in r.stdout.split("\n"),
            f"deltaserve_config not found in DELTASERVE_SECRETS_DIR: {r.stdout}")
    r = d.run([entrypoint], env=dict(senv, DELTASERVE_BASE=os.path.join(tmp, "nope.safetensors")),
              check_rc=False)
    d.check(r.returncode == 64 and "does not exist" in r.stderr, f"missing base: {r.returncode} {r.stderr}")
    r = d.run([entrypoint], env=dict(senv, DELTASERVE_TLS_CERT=base), check_rc=False)
    d.check(r.returncode == 64 and "both" in r.stderr, f"half a TLS pair: {r.returncode} {r.stderr}")
    r = d.run([entrypoint], env=dict(senv, DELTASERVE_CONFIG=os.path.join(tmp, "volumes")), check_rc=False)
    d.check(r.returncode == 64 and "not a readable file" in r.stderr, f"config is a dir: {r.stderr}")
    d.log("PASS: entrypoint maps the compose environment to flags, execs deltaserved, health check "
          "SERVING, SIGTERM exit 0; overrides, secrets dir and bad configs handled")
