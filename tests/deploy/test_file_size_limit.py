"""deploy_file_size_limit: deltaserved under a file size limit (ulimit -f, systemd
LimitFSIZE) reports a write past it and keeps serving.

Before, a PutDelta whose write-ahead-log record went past the limit killed the daemon
with SIGXFSZ: no log line, the client saw "Socket closed". Now the push fails with the
store's I/O error ("File too large"), the daemon logs it, stays up, still answers,
and stops cleanly on SIGTERM."""
import os
import shlex
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")

with tempfile.TemporaryDirectory(prefix="deploy-fsize-") as tmp:
    base, ft = d.make_model_pair(tmp)
    delta = os.path.join(tmp, "raw.dds")
    # Every tensor raw: a container of about 66 KB, one write-ahead-log record.
    d.run([deltactl, "compress", "--codec", "dct", "--rule", "*=raw", "--base", base,
           "--finetuned", ft, "--out", delta], env=d.clean_env(), what="deltactl compress")
    d.check(os.path.getsize(delta) > 65536, f"container of {os.path.getsize(delta)} bytes")
    daemon_argv = [deltaserved, "--base", base, "--db", os.path.join(tmp, "db"),
                   "--listen", "127.0.0.1:0",
                   "--metrics-listen", "", "--workers", "2", "--drain-seconds", "5"]
    # 128 blocks of 512 bytes: 64 KiB per file, less than the container.
    daemon = d.Daemon(["sh", "-c", "ulimit -f 128; exec " + shlex.join(daemon_argv)],
                      os.path.join(tmp, "deltaserved.log"), env=d.clean_env())
    addr = f"127.0.0.1:{d.serving_ports(daemon)[0]}"
    d.wait_until(lambda: d.healthcheck(addr)[0] == 0, 30, f"deltaserved on {addr} SERVING", daemon)
    push = d.run([deltactl, "--server", addr, "push", "--task", "t", "--in", delta],
                 env=d.clean_env(), check_rc=False, what="deltactl push")
    d.check(push.returncode == 1 and "File too large" in push.stderr,
            f"push past the file size limit: wanted exit 1 naming 'File too large', got "
            f"{push.returncode}:\n{push.stderr}")
    d.check(daemon.poll() is None,
            f"deltaserved died (code {daemon.poll()}) on a write past the file size limit:\n"
            f"{daemon.log_text()}")
    listing = d.run([deltactl, "--server", addr, "list"], env=d.clean_env(), what="deltactl list")
    d.check("0 tasks" in listing.stdout, f"list after the failed push:\n{listing.stdout}")
    d.check("File too large" in daemon.log_text(), f"the log does not name the error:\n"
            f"{daemon.log_text()}")
    code = daemon.terminate()
    daemon.stop()
    d.check(code == 0, f"SIGTERM exit {code}")
d.log("PASS: a push past ulimit -f fails with 'File too large'; the daemon keeps serving "
      "and drains on SIGTERM")
