"""deploy_runtime_packages: every shared library that the built deltaserved and deltactl
load (ldd) belongs to a Debian package listed in docker/runtime-packages.txt, which the
image's runtime stage installs (the Dockerfile's build stage runs the same check)."""
import os

import deploy_lib as d

bins = [d.need_binary("DELTASERVED_BIN", "deltaserved"), d.need_binary("DELTACTL_BIN", "deltactl")]
script = os.path.join(d.DOCKER_DIR, "runtime-deps.sh")
r = d.run([script] + bins, what="runtime-deps.sh")
needed = r.stdout.split()
d.log("packages owning the binaries' shared libraries: " + " ".join(needed))
r = d.run([script, "--check", os.path.join(d.DOCKER_DIR, "runtime-packages.txt")] + bins,
          check_rc=False)
d.log((r.stdout + r.stderr).strip())
d.check(r.returncode == 0, "docker/runtime-packages.txt misses packages the binaries need")
for must in ("libgrpc++1.51", "librocksdb7.8", "libprotobuf32"):
    d.check(must in needed, f"expected {must} among the libraries of the binaries")
d.log(f"PASS: {len(needed)} packages, all listed")
