"""python_package_import: what a user sees when the package is not the built one (no
daemon). From a new-user trial:
1. PYTHONPATH=python (the source tree, no generated stubs): ImportError naming the
   package directory, the missing deltaserve/v1 and the fix (PYTHONPATH=<build>/python,
   target deltaserve_python), not a bare "No module named 'deltaserve.v1'".
2. A copy of the built package without its native modules: local decode says
   UNIMPLEMENTED "deltaserve._codec ... is not built in DIR ... pybind11", with no
   "partially initialized module ... circular import" text; the C++ client path is off.
3. The same with a native module built for another Python (its file name has another
   ABI tag): the message names the file and this interpreter."""
import os
import shutil
import subprocess
import sys
import tempfile

import live_daemon  # noqa: F401 - skips (77) when the package is not importable
from live_daemon import d

import deltaserve

BUILT = os.path.dirname(os.path.dirname(os.path.abspath(deltaserve.__file__)))
SOURCE = os.path.join(os.environ.get("DELTASERVE_SOURCE_DIR", ""), "python")

PROBE = """
import deltaserve, grpc
from deltaserve import DeltaserveError, LocalBase, _native
print("native", _native.available())
try:
    LocalBase({})
except DeltaserveError as e:
    print(e.code.name, e.message)
"""


def run(pythonpath, code):
    env = dict(os.environ, PYTHONPATH=pythonpath)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60, cwd="/")
    return p.returncode, p.stdout + p.stderr


# 1. The source tree.
d.check(os.path.isdir(os.path.join(SOURCE, "deltaserve")), f"no source package in {SOURCE}")
rc, out = run(SOURCE, "import deltaserve")
d.log(out.strip().splitlines()[-1])
d.check(rc != 0, "importing the source tree's package succeeded")
for piece in [f"the deltaserve package at {os.path.join(SOURCE, 'deltaserve')} has no gRPC stubs",
              "No module named 'deltaserve.v1'", "not the source tree python/",
              "PYTHONPATH=<build>/python", "deltaserve_python"]:
    d.check(piece in out, f"expected {piece!r} in: {out}")

with tempfile.TemporaryDirectory(prefix="py-import-") as tmp:
    # 2. The built package without _codec / _pull.
    pkg = os.path.join(tmp, "deltaserve")
    shutil.copytree(os.path.join(BUILT, "deltaserve"), pkg,
                    ignore=shutil.ignore_patterns("_codec*.so", "_pull*.so", "__pycache__"))
    rc, out = run(tmp, PROBE)
    d.log(out.strip())
    d.check(rc == 0, f"the probe failed: {out}")
    d.check("native False" in out, f"the C++ client path should be off: {out}")
    for piece in ["UNIMPLEMENTED deltaserve._codec (the C++ codec, for local decode) is not "
                  f"built in {pkg}", "pybind11", "/usr/bin/python3"]:
        d.check(piece in out, f"expected {piece!r} in: {out}")
    d.check("circular import" not in out and "partially initialized" not in out,
            f"import noise in the message: {out}")
    # 3. A module built for another Python (an empty file with another ABI tag).
    other = "_codec.cpython-39-x86_64-linux-gnu.so"
    open(os.path.join(pkg, other), "wb").close()
    rc, out = run(tmp, PROBE)
    d.log(out.strip())
    major, minor = sys.version_info[:2]
    for piece in [f"cannot be loaded by this Python {major}.{minor} ({sys.executable})",
                  f"{pkg} holds {other}", "built for the interpreter the build found"]:
        d.check(piece in out, f"expected {piece!r} in: {out}")
d.log("PASS: the source tree, missing and foreign native modules give clean messages")
