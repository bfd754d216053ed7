"""deploy_promtool_metrics: `promtool check metrics` on deltaserved's live /metrics output,
taken after a push and a pull so every labelled family has series: no lint problem."""
import subprocess
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")
promtool = d.need_tool("promtool")

with tempfile.TemporaryDirectory(prefix="deploy-promtool-metrics-") as tmp:
    ds = d.Deltaserve(tmp, deltaserved, deltactl)
    try:
        ds.push("lint", ds.compress())
        ds.pull("lint")
        text = ds.metrics()
    finally:
        ds.stop()
families = [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")]
d.log(f"/metrics: {len(text)} bytes, {len(families)} families")
r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
out = (r.stdout + r.stderr).strip()
d.check(r.returncode == 0 and not out, f"promtool check metrics: exit {r.returncode}\n{out}")
missing = set(d.SPEC_METRICS) - set(families)
d.check(not missing, f"families missing from /metrics: {sorted(missing)}")
d.log(f"PASS: promtool check metrics clean on {len(families)} families")
