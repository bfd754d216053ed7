"""deploy_shellcheck: shellcheck (warnings and errors) on the image's shell scripts."""
import glob
import os

import deploy_lib as d

tool = d.need_tool("shellcheck")
scripts = sorted(glob.glob(os.path.join(d.DOCKER_DIR, "*.sh")))
d.check(len(scripts) >= 3, f"expected entrypoint, healthcheck and runtime-deps scripts: {scripts}")
r = d.run([tool, "--severity=warning", "--shell=bash"] + scripts, check_rc=False)
d.check(r.returncode == 0, "shellcheck found problems:\n" + r.stdout + r.stderr)
d.log(f"PASS: shellcheck clean on {', '.join(os.path.basename(s) for s in scripts)}")
