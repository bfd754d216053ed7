"""deploy_promtool_metrics: `promtool check metrics` on deltaserved's live /metrics output,
taken after a push and a pull so every labelled family has series: no lint problem."""
import subprocess

import deploy_lib as d

promtool = d.need_tool("promtool")
text = d.metrics_after_traffic("lint")
families = list(d.metric_families(text))
d.log(f"/metrics: {len(text)} bytes, {len(families)} families")
r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
out = (r.stdout + r.stderr).strip()
d.check(r.returncode == 0 and not out, f"promtool check metrics: exit {r.returncode}\n{out}")
missing = (set(d.SPEC_METRICS) | set(d.PROCESS_METRICS)) - set(families)
d.check(not missing, f"families missing from /metrics: {sorted(missing)}")
types = d.metric_families(text)
wrong = {n: types[n] for n, t in d.PROCESS_METRICS.items() if types[n] != t}
d.check(not wrong, f"process metrics of the wrong type: {wrong}")
d.log(f"PASS: promtool check metrics clean on {len(families)} families")
