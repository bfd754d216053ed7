"""deploy_usage_errors: bad addresses and out-of-range values are usage errors (exit 2)
that name the flag (or the variable that set it), and gRPC's own log lines stay out of
what a user reads.

New-user trial: `deltaserved --listen notaport` said "address already in use?" after a raw
gRPC line "E1201 ... chttp2_server.cc:1045] UNKNOWN:Name or service not known"; values
that parse but are out of range exited 1 naming `ServerOptions.*` fields;
`deltactl --server HOST` without a port dialled 443; a TLS client against a plaintext
server printed gRPC's "E... ssl_transport_security.cc] Handshake failed" line."""
import os
import re
import subprocess
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")
GRPC_LINE = re.compile(r"^[EIWD]\d{4} \d\d:\d\d:\d\d", re.M)  # gpr_log's own format


def usage_error(argv, want, env_extra=None):
    r = subprocess.run(argv, env=d.clean_env(env_extra), capture_output=True, text=True,
                       timeout=30)
    out = r.stdout + r.stderr
    d.check(r.returncode == 2, f"{argv[1:]} {env_extra or ''}: exit {r.returncode}, wanted 2:\n{out}")
    d.check(want in out, f"{argv[1:]}: wanted {want!r} in:\n{out}")
    for bad in ("ServerOptions", "already in use", "nonexistent"):
        d.check(bad not in out, f"{argv[1:]}: {bad!r} in:\n{out}")
    d.check(not GRPC_LINE.search(out), f"{argv[1:]}: a raw gRPC log line:\n{out}")
    d.log(f"exit 2: {out.strip().splitlines()[0]}")


server = [deltaserved, "--base", "/nonexistent/base.safetensors"]
listen_forms = "(want host:port, [v6]:port, unix:PATH)"
usage_error(server + ["--listen", "notaport"], f"--listen: no port {listen_forms}, got 'notaport'")
usage_error(server + ["--listen", "::1:50051"], "--listen: an IPv6 address needs brackets")
usage_error(server + ["--listen", "h:65536"], "--listen: port '65536' is not a number in [0, 65535]")
usage_error(server + ["--metrics-listen", "9464"], "--metrics-listen: no port")
# New-user trial: "[zz]:1" got to getaddrinfo ("Name or service not known", exit 1) and the
# metrics endpoint's message named neither flag nor variable.
for flag in ("--listen", "--metrics-listen", "--agent-listen"):
    want = f"{flag}: 'zz' between the brackets is not an IPv6 address"
    usage_error(server + [flag, "[zz]:1"], want)
    env = "DELTASERVE_" + flag[2:].upper().replace("-", "_")
    usage_error(server, f"{want} ", {env: "[zz]:1"})
    usage_error(server, f"got '[zz]:1'", {env: "[zz]:1"})
    usage_error(server, f"(set by {env})", {env: "[zz]:1"})
usage_error(server + ["--workers", "5000"], "deltaserved: --workers must be in [0, 1024], got 5000\n")
usage_error(server + ["--max-streams", "0"], "--max-streams must be in [1, 65536], got 0")
usage_error(server + ["--grpc-memory-bytes", "1"], "--grpc-memory-bytes must be >= 16 MiB")
usage_error(server, "--max-uploads must be in [1, 4096], got 0 (set by DELTASERVE_MAX_UPLOADS)",
            {"DELTASERVE_MAX_UPLOADS": "0"})
# New-user trial: a value CLI11 cannot convert, set by the variable, named only the flag.
usage_error(server, "deltaserved: that value came from DELTASERVE_WORKERS",
            {"DELTASERVE_WORKERS": "abc"})
# New-user trial: numbers were read by strtoull(..., 0) / strtod: "0x10" as 16, "010" as
# octal 8, "1e3" as 1000. Only plain decimal numerals are taken, from flags and variables.
usage_error(server + ["--workers", "0x10"],
            "--workers: want a whole number in [0, 2147483647], got '0x10'")
usage_error(server + ["--max-streams", "-1"],
            "--max-streams: want a whole number in [0, 2147483647], got '-1'")
usage_error(server, "--max-connections: want a whole number in [0, 2147483647], got '010' (no "
            "leading zero: it would be read as octal)", {"DELTASERVE_MAX_CONNECTIONS": "010"})
usage_error(server, "deltaserved: that value came from DELTASERVE_MAX_CONNECTIONS",
            {"DELTASERVE_MAX_CONNECTIONS": "010"})
usage_error(server + ["--cache-bytes", "1e9"],
            "--cache-bytes: want a whole number of bytes >= 0 (at most 2^64 - 1), got '1e9'")
usage_error(server + ["--drain-seconds", "1e3"],
            "--drain-seconds: want a number of seconds in [0, 1e9], got '1e3'")
usage_error(server + ["--stall-seconds", "0x10"],
            "--stall-seconds: want a number of seconds in [0, 1e9], got '0x10'")
usage_error(server + ["--tls-cert", "/c.pem"], "set both --tls-cert and --tls-key, or neither")
usage_error(server + ["--bogus"], "The following argument was not expected: --bogus")

usage_error([deltactl, "--server", "::1", "list"], "--server: an IPv6 address needs brackets")
usage_error([deltactl, "--server", "h:0", "list"], "--server: port 0 cannot be dialled")
usage_error([deltactl, "list"], "DELTASERVE_SERVER: port 'x' is not a number",
            {"DELTASERVE_SERVER": "h:x"})
usage_error([deltactl, "list", "--timeout", "0"], "--timeout: want a positive number of seconds")

with tempfile.TemporaryDirectory(prefix="deploy-usage-") as tmp:
    base, _ = d.make_model_pair(tmp)
    # A Unix socket gRPC cannot bind: the failure names the address, and gRPC's own line
    # comes as one of ours ("grpc where=... message=...").
    r = subprocess.run([deltaserved, "--base", base, "--db", os.path.join(tmp, "db0"),
                        "--metrics-listen", "", "--listen", "unix:/nonexistent/dir/sock"],
                       env=d.clean_env(), capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    d.check(r.returncode == 1 and "cannot listen on unix:/nonexistent/dir/sock" in out,
            f"unix listen: exit {r.returncode}:\n{out}")
    d.check(not GRPC_LINE.search(out), f"unix listen: a raw gRPC log line:\n{out}")

    # deltactl --server HOST dials deltaserved's default port, and a TLS client against a
    # plaintext server reads one line of ours, not gRPC's.
    r = subprocess.run([deltactl, "--server", "127.0.0.1", "list", "--timeout", "3"],
                       env=d.clean_env(), capture_output=True, text=True, timeout=30)
    d.check("127.0.0.1:50051" in r.stderr and ":443" not in r.stderr,
            f"--server without a port: {r.stderr}")
    daemon = d.Daemon([deltaserved, "--base", base, "--db", os.path.join(tmp, "db"),
                       "--listen", "127.0.0.1:0", "--metrics-listen", "", "--drain-seconds", "1"],
                      os.path.join(tmp, "daemon.log"), env=d.clean_env())
    try:
        addr = f"127.0.0.1:{d.serving_ports(daemon)[0]}"
        d.wait_until(lambda: d.healthcheck(addr)[0] == 0, 30, f"deltaserved on {addr}", daemon)
        r = subprocess.run([deltactl, "--server", addr, "--tls", "list", "--timeout", "5"],
                           env=d.clean_env(), capture_output=True, text=True, timeout=30)
        d.check(r.returncode == 1, f"--tls against plaintext: exit {r.returncode}: {r.stderr}")
        d.check(not GRPC_LINE.search(r.stderr), f"--tls: a raw gRPC log line:\n{r.stderr}")
        d.check(len(r.stderr.strip().splitlines()) == 1, f"--tls: more than one line:\n{r.stderr}")
        d.check("TLS on one side only" in r.stderr, f"--tls: no hint:\n{r.stderr}")
        d.check(not GRPC_LINE.search(daemon.log_text()), f"daemon log:\n{daemon.log_text()}")
    finally:
        d.check(daemon.terminate() == 0, "deltaserved did not exit 0 on SIGTERM")
        daemon.stop()
d.log("PASS: addresses and ranges are usage errors naming the flag; no raw gRPC lines")
