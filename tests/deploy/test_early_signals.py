"""deploy_early_signals: a stop signal during deltaserved's start-up, before main (while
the shared libraries initialise), is logged and the daemon exits 0.

New-user trial: a SIGTERM in the first ~20 ms of start exited 143 with no log line, and
SIGHUP always killed the daemon unlogged (exit 129). The handlers are now installed from
the executable's DT_PREINIT_ARRAY. hold_start.c, preloaded, holds start-up inside a
library initialiser until the signal has been sent, so the test does not depend on timing.
A SIGHUP once serving drains like SIGTERM (exit 0, a 'signal' line)."""
import os
import signal
import subprocess
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
hold_lib = os.environ.get("DELTASERVE_HOLD_START_LIB", "")
if not os.path.exists(hold_lib):
    d.skip(f"no hold_start library ({hold_lib!r})")

with tempfile.TemporaryDirectory(prefix="deploy-early-sig-") as tmp:
    base, _ = d.make_model_pair(tmp)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        hold = os.path.join(tmp, sig.name)
        os.mkdir(hold)
        log_path = os.path.join(tmp, sig.name + ".log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [deltaserved, "--base", base, "--db", os.path.join(tmp, "db-" + sig.name),
                 "--listen", "127.0.0.1:0", "--metrics-listen", ""],
                stdout=log, stderr=subprocess.STDOUT,
                env=d.clean_env({"LD_PRELOAD": hold_lib, "DELTASERVE_HOLD_DIR": hold}))
        try:
            d.wait_until(lambda: os.path.exists(os.path.join(hold, "held")), 30,
                         "deltaserved held in a library initialiser")
            proc.send_signal(sig)
            open(os.path.join(hold, "go"), "w").close()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with open(log_path) as f:
            text = f.read()
        d.check(code == 0, f"{sig.name} before main: exit {code}, wanted 0\n{text}")
        lines = [l for l in text.splitlines() if "stopped during start-up" in l]
        d.check(len(lines) == 1 and f"signal={sig.name}" in lines[0],
                f"{sig.name} before main: wanted one 'stopped during start-up "
                f"signal={sig.name}' line:\n{text}")
        d.check(" serving " not in text, f"{sig.name}: it served:\n{text}")
        d.log(f"{sig.name} before main: exit 0: {lines[0]}")

    # SIGHUP once serving: a drain, as SIGTERM (it killed the daemon, exit 129).
    daemon = d.Daemon([deltaserved, "--base", base, "--db", os.path.join(tmp, "db-hup"),
                       "--listen", "127.0.0.1:0", "--metrics-listen", "", "--drain-seconds",
                       "1"], os.path.join(tmp, "hup.log"), env=d.clean_env())
    try:
        addr = f"127.0.0.1:{d.serving_ports(daemon)[0]}"
        d.wait_until(lambda: d.healthcheck(addr)[0] == 0, 30, f"deltaserved on {addr}", daemon)
        daemon.proc.send_signal(signal.SIGHUP)
        code = daemon.proc.wait(timeout=60)
        text = daemon.log_text()
        d.check(code == 0, f"SIGHUP once serving: exit {code}, wanted 0\n{text}")
        d.check(any(" signal " in l and "signal=SIGHUP" in l for l in text.splitlines()),
                f"SIGHUP once serving: no 'signal signal=SIGHUP' line:\n{text}")
    finally:
        daemon.stop()
d.log("PASS: SIGTERM, SIGINT and SIGHUP before main are logged, exit 0; SIGHUP drains")
