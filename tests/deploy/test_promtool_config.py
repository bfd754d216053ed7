"""deploy_promtool_config: `promtool check config` on deploy/prometheus/prometheus.yml (with
the rule file it loads), `promtool check rules` and the alert unit tests (alerts_test.yml),
all clean (exit 0, SUCCESS, no warning)."""
import os
import shutil
import tempfile

import deploy_lib as d

promtool = d.need_tool("promtool")
cfg = os.path.join(d.DEPLOY_DIR, "prometheus", "prometheus.yml")
rules = os.path.join(d.DEPLOY_DIR, "prometheus", "alerts.yml")

r = d.run([promtool, "check", "config", cfg])
out = r.stdout + r.stderr
d.log(out.strip())
d.check("SUCCESS: " in out and "is valid prometheus config" in out, "no SUCCESS line for " + cfg)
d.check("1 rule files found" in out, "prometheus.yml must load alerts.yml")
d.check("WARNING" not in out.upper(), "promtool warned: " + out)

r = d.run([promtool, "check", "rules", rules])
out = r.stdout + r.stderr
d.log(out.strip())
d.check("SUCCESS: 4 rules found" in out, "expected 4 alert rules: " + out)

with tempfile.TemporaryDirectory(prefix="deploy-promtool-") as tmp:
    shutil.copy(rules, tmp)
    shutil.copy(os.path.join(os.path.dirname(__file__), "alerts_test.yml"), tmp)
    r = d.run([promtool, "test", "rules", os.path.join(tmp, "alerts_test.yml")])
    out = r.stdout + r.stderr
    d.log(out.strip())
    d.check("SUCCESS" in out, "alert unit tests did not pass: " + out)
d.log("PASS: prometheus config, rules and alert unit tests are clean")
