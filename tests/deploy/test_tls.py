"""deploy_tls: TLS from secret files, as compose/Kubernetes mount them. A self-signed
certificate and key (openssl) and the example tenants config lie in a secrets directory;
docker/entrypoint.sh is started with none of DELTASERVE_CONFIG/_TLS_CERT/_TLS_KEY set and
must find all three there. The health check (same environment, as the image's HEALTHCHECK
runs it) then speaks TLS and reports SERVING, deltactl works with --tls-ca, a plaintext
client is refused, and SIGTERM exits 0."""
import os
import shutil
import subprocess
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")
openssl = d.need_tool("openssl")
entrypoint = os.path.join(d.DOCKER_DIR, "entrypoint.sh")

with tempfile.TemporaryDirectory(prefix="deploy-tls-") as tmp:
    secrets = os.path.join(tmp, "secrets")
    os.makedirs(secrets)
    cert, key = os.path.join(secrets, "deltaserve_tls_cert"), os.path.join(secrets, "deltaserve_tls_key")
    d.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], what="openssl req")
    shutil.copy(d.EXAMPLE_CONFIG, os.path.join(secrets, "deltaserve_config"))
    base, _ = d.make_model_pair(tmp)
    # Port 0: the daemon picks free ports and logs them (serving_ports).
    env = d.clean_env({"DELTASERVE_SECRETS_DIR": secrets, "DELTASERVE_BASE": base,
                       "DELTASERVE_DB": os.path.join(tmp, "db"),
                       "DELTASERVE_LISTEN": "127.0.0.1:0",
                       "DELTASERVE_METRICS_LISTEN": "127.0.0.1:0",
                       "DELTASERVE_DRAIN_SECONDS": "5", "DELTASERVED_BIN": deltaserved})
    dm = d.Daemon([entrypoint], os.path.join(tmp, "entrypoint.log"), env=env)
    port = d.serving_ports(dm)[0]
    addr = f"127.0.0.1:{port}"
    d.wait_until(lambda: d.healthcheck(addr, env)[0] == 0, 30, "TLS health check SERVING", dm)
    rc, out = d.healthcheck(addr, env)
    d.log("health: " + out)
    log = dm.log_text()
    for flag, path in (("--config", "deltaserve_config"), ("--tls-cert", "deltaserve_tls_cert"),
                       ("--tls-key", "deltaserve_tls_key")):
        d.check(f"{flag}={os.path.join(secrets, path)}" in log, f"{flag} not taken from the secrets dir:\n{log}")
    # Plaintext probing a TLS server fails (the probe must follow the daemon's TLS).
    plain_env = {k: v for k, v in env.items() if k != "DELTASERVE_SECRETS_DIR"}
    rc, out = d.healthcheck(addr, plain_env)
    d.check(rc != 0, "a plaintext health check must not pass against the TLS port")
    r = d.run([deltactl, "list", "--server", f"localhost:{port}", "--token", d.ACME_TOKEN,
               "--tls-ca", cert], env=d.clean_env(), what="deltactl list --tls-ca")
    d.log("deltactl list over TLS: exit 0")
    r = d.run([deltactl, "list", "--server", addr, "--token", d.ACME_TOKEN, "--timeout", "5"],
              env=d.clean_env(), check_rc=False)
    d.check(r.returncode != 0, "a plaintext deltactl must fail against the TLS port")
    code = dm.terminate(20)
    d.check(code == 0, f"SIGTERM: exit {code}\n{dm.log_text()}")
    dm.stop()
    d.log("PASS: TLS cert, key and config found in the secrets dir; TLS health check SERVING; "
          "deltactl --tls-ca works, plaintext refused; SIGTERM exit 0")
