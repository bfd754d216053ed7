"""deploy_start_errors: a start-up failure caused by a flag's value (a busy port, a missing
file) names the flag, or the DELTASERVE_* variable when that is what set it (exit 1).

New-user trial: a busy port given through DELTASERVE_LISTEN said "(set --listen)"; a busy
--agent-listen port said "(set --listen)" too; a missing TLS certificate, base or config
file named no flag at all."""
import os
import socket
import subprocess
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")


def start_error(args, want, env_extra=None):
    r = subprocess.run([deltaserved] + args, env=d.clean_env(env_extra), capture_output=True,
                       text=True, timeout=60)
    out = r.stdout + r.stderr
    d.check(r.returncode == 1, f"{args} {env_extra or ''}: exit {r.returncode}, wanted 1:\n{out}")
    failed = [line for line in out.splitlines() if "start failed" in line]
    d.check(len(failed) == 1, f"{args} {env_extra or ''}: no 'start failed' line:\n{out}")
    d.check(want in failed[0], f"{args} {env_extra or ''}: wanted {want!r} in:\n{failed[0]}")
    d.log(f"exit 1: {failed[0].split('start failed ', 1)[1]}")
    return failed[0]


with tempfile.TemporaryDirectory(prefix="deploy-start-") as tmp, \
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
    base, _ = d.make_model_pair(tmp)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = f"127.0.0.1:{busy.getsockname()[1]}"
    db = iter(os.path.join(tmp, f"db{i}") for i in range(100))
    quiet = ["--metrics-listen", ""]

    # The gRPC port: the flag when given as one, the variable when it set it.
    start_error(["--base", base, "--db", next(db), "--listen", port] + quiet,
                f"cannot listen on {port}: address already in use? (set --listen) [Address "
                "already in use]")
    line = start_error(["--base", base, "--db", next(db)] + quiet,
                       f"cannot listen on {port}: address already in use? (set "
                       "DELTASERVE_LISTEN) [Address already in use]", {"DELTASERVE_LISTEN": port})
    d.check("--listen" not in line, f"the flag named for a variable's value:\n{line}")
    # The agent-check port said "(set --listen)", another flag.
    start_error(["--base", base, "--db", next(db), "--listen", "127.0.0.1:0",
                 "--agent-listen", port] + quiet,
                f"cannot listen on {port}: address already in use? (set --agent-listen)")
    start_error(["--base", base, "--db", next(db), "--listen", "127.0.0.1:0"] + quiet,
                f"cannot listen on {port}: address already in use? (set "
                "DELTASERVE_AGENT_LISTEN)", {"DELTASERVE_AGENT_LISTEN": port})
    # The metrics port.
    start_error(["--base", base, "--db", next(db), "--listen", "127.0.0.1:0"],
                f"cannot serve metrics on {port}: address already in use? (set "
                "DELTASERVE_METRICS_LISTEN, \\\"\\\" turns it off) [Address already in use]",
                {"DELTASERVE_METRICS_LISTEN": port})
    # A host that does not resolve: "(set ...)" as for a busy port (new-user trial: the
    # metrics address said only "Name or service not known").
    for flag, env, said in [("--listen", "DELTASERVE_LISTEN", "cannot listen on"),
                            ("--agent-listen", "DELTASERVE_AGENT_LISTEN", "cannot listen on"),
                            ("--metrics-listen", "DELTASERVE_METRICS_LISTEN",
                             "cannot serve metrics on")]:
        bad = "no-such-host.invalid:1"
        others = [] if flag == "--listen" else ["--listen", "127.0.0.1:0"]
        others += [] if flag == "--metrics-listen" else quiet
        off = ", \\\"\\\" turns it off" if flag == "--metrics-listen" else ""
        start_error(["--base", base, "--db", next(db), flag, bad] + others,
                    f"{said} {bad}: host not found? (set {flag}{off}) [")
        start_error(["--base", base, "--db", next(db)] + others,
                    f"{said} {bad}: host not found? (set {env}{off}) [",
                    {env: bad})
    # Files: TLS certificate and key, base, config.
    start_error(["--base", base, "--db", next(db), "--listen", "127.0.0.1:0"] + quiet,
                "DELTASERVE_TLS_CERT (TLS certificate): cannot open /nonexistent/c.pem",
                {"DELTASERVE_TLS_CERT": "/nonexistent/c.pem", "DELTASERVE_TLS_KEY": "/k.pem"})
    start_error(["--base", base, "--db", next(db), "--listen", "127.0.0.1:0",
                 "--tls-cert", base, "--tls-key", "/nonexistent/k.pem"] + quiet,
                "--tls-key (TLS key): cannot open /nonexistent/k.pem")
    start_error(["--db", next(db), "--listen", "127.0.0.1:0"] + quiet,
                "DELTASERVE_BASE: /nonexistent/b.safetensors: no such file or directory",
                {"DELTASERVE_BASE": "/nonexistent/b.safetensors"})
    start_error(["--base", base, "--db", next(db), "--listen", "127.0.0.1:0",
                 "--config", "/nonexistent/tenants.json"] + quiet,
                "--config: config: cannot open /nonexistent/tenants.json")
    # The database path: a file where the directory should be.
    start_error(["--base", base, "--listen", "127.0.0.1:0"] + quiet,
                "DELTASERVE_DB: ", {"DELTASERVE_DB": base})
d.log("PASS: start-up failures name the flag, or the variable that set it")
