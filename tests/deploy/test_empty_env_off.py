"""deploy_empty_env_off: an environment variable set to "" turns off what its flag's ""
turns off.

CLI11 skips an environment variable that is set but empty, so DELTASERVE_METRICS_LISTEN=
used to leave the default 127.0.0.1:9464 bound, although server/CONFIG.md and
deploy/README.md say "" turns metrics off (a second daemon on the host then failed to
start, or metrics were exposed where nobody asked for them). Runs deltaserved with
DELTASERVE_METRICS_LISTEN= and DELTASERVE_AGENT_LISTEN= and no flags for them: it must
serve with metrics_port=0 and agent_port=0, and nothing may listen on port 9464 that was
free before. Then the same with DELTASERVE_METRICS_LISTEN=127.0.0.1:<free port>: that
port is bound (the variable still works when not empty)."""
import os
import re
import socket
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def serving_line(env_extra, tmp, name):
    models = os.path.join(tmp, "models-" + name)
    os.makedirs(models)
    base, _ = d.make_model_pair(models)
    daemon = d.Daemon([deltaserved, "--base", base, "--db", os.path.join(tmp, name),
                       "--listen", "127.0.0.1:0", "--drain-seconds", "1"],
                      os.path.join(tmp, name + ".log"), env=d.clean_env(env_extra))
    try:
        addr = f"127.0.0.1:{d.serving_ports(daemon)[0]}"
        d.wait_until(lambda: d.healthcheck(addr)[0] == 0, 30, f"deltaserved on {addr}", daemon)
        lines = [l for l in daemon.log_text().splitlines() if " serving " in l]
        d.check(lines, f"no serving line:\n{daemon.log_text()}")
        return lines[-1], daemon
    except BaseException:
        daemon.stop()
        raise


with tempfile.TemporaryDirectory(prefix="deploy-empty-env-") as tmp:
    default_free = port_free(9464)
    line, daemon = serving_line({"DELTASERVE_METRICS_LISTEN": "", "DELTASERVE_AGENT_LISTEN": ""},
                                tmp, "off")
    try:
        d.check(re.search(r"\bmetrics_port=0\b", line), f"metrics not off: {line}")
        d.check(re.search(r"\bagent_port=0\b", line), f"agent check not off: {line}")
        if default_free:
            d.check(port_free(9464), "DELTASERVE_METRICS_LISTEN= still bound 127.0.0.1:9464")
    finally:
        d.check(daemon.terminate() == 0, "deltaserved did not exit 0 on SIGTERM")
        daemon.stop()
    d.log(f"empty variables: {line.strip()}")

    port = d.free_port()
    line, daemon = serving_line({"DELTASERVE_METRICS_LISTEN": f"127.0.0.1:{port}"}, tmp, "on")
    try:
        d.check(re.search(rf"\bmetrics_port={port}\b", line), f"metrics not on {port}: {line}")
        d.check(not port_free(port), f"nothing listens on the metrics port {port}")
    finally:
        d.check(daemon.terminate() == 0, "deltaserved did not exit 0 on SIGTERM")
        daemon.stop()
    d.log(f"PASS: empty DELTASERVE_METRICS_LISTEN / AGENT_LISTEN turn them off; a set one binds")
