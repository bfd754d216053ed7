"""deploy_dockerfile: docker/Dockerfile checked without a Docker engine. Its build stage's
CMake command line is run for real (configure only, into a temp dir) and must define the
targets it builds; every COPY source exists and survives .dockerignore; the runtime stage
runs as a non-root user, exposes the ports its environment listens on, and its HEALTHCHECK
and ENTRYPOINT are scripts it copies; every package of docker/runtime-packages.txt exists
in Debian 12's archive (apt) or is installed."""
import fnmatch
import os
import re
import shlex
import subprocess
import tempfile

import deploy_lib as d

path = os.path.join(d.DOCKER_DIR, "Dockerfile")
with open(path) as f:
    raw = f.read()
# Instructions: comment lines dropped, continuation lines joined.
lines, cur = [], ""
for line in raw.splitlines():
    if line.strip().startswith("#") or not line.strip():
        continue
    if line.rstrip().endswith("\\"):
        cur += line.strip()[:-1].strip() + " "
        continue
    lines.append((cur + line.strip()).strip())
    cur = ""
stages = []
for ins in lines:
    op, _, arg = ins.partition(" ")
    op = op.upper()
    if op == "FROM":
        stages.append({"from": arg, "ins": []})
    else:
        stages[-1]["ins"].append((op, arg.strip()))
d.check(len(stages) == 2, f"expected 2 stages (build, runtime), got {len(stages)}")
d.check(re.fullmatch(r"debian:12(-slim)? AS build", stages[0]["from"]), f"build stage: {stages[0]['from']}")
d.check(re.fullmatch(r"debian:12(-slim)? AS runtime", stages[1]["from"]), f"runtime stage: {stages[1]['from']}")
build, runtime = stages[0]["ins"], stages[1]["ins"]

# --- build stage: install-deps.sh --build-only, then the CMake configure it runs
runs = " && ".join(a for op, a in build if op == "RUN")
d.check("deploy/install-deps.sh --build-only" in runs, "build stage must run deploy/install-deps.sh --build-only")
with open(os.path.join(d.DEPLOY_DIR, "install-deps.sh")) as f:
    d.check("--build-only" in f.read(), "deploy/install-deps.sh does not know --build-only")
m = re.search(r"cmake -S \. -B /build -G Ninja((?: -D\S+)+)", runs)
d.check(m, "build stage must configure with cmake -S . -B /build -G Ninja -D...")
defs = m.group(1).split()
d.check("-DCMAKE_BUILD_TYPE=Release" in defs and "-DDELTASERVE_BUILD_TESTS=OFF" in defs,
        f"Release build with tests off: {defs}")
targets = re.search(r"ninja -C /build ([\w ]+?) &&", runs).group(1).split()
d.check(targets == ["deltaserved", "deltactl"], f"ninja targets {targets}")
with open(os.path.join(d.SOURCE_DIR, "CMakeLists.txt")) as f:
    top = f.read()
for opt in ("DELTASERVE_BUILD_TESTS", "DELTASERVE_BUILD_BENCHMARKS"):
    d.check(f"option({opt}" in top, f"Dockerfile sets {opt}, which CMakeLists.txt does not define")
with tempfile.TemporaryDirectory(prefix="deploy-docker-build-") as tmp:
    r = d.run(["cmake", "-S", d.SOURCE_DIR, "-B", tmp, "-G", "Ninja"] + defs, timeout=50,
              what="the Dockerfile's cmake configure")
    graph = d.run(["ninja", "-C", tmp, "-t", "targets", "all"]).stdout
    defined = {t for t in targets if re.search(rf"^{t}:", graph, re.M)}
    d.log(f"cmake configure with {' '.join(defs)}: OK; targets defined: {sorted(defined)}")
    if os.environ.get("DELTASERVED_BIN") and os.environ.get("DELTACTL_BIN"):
        d.check(defined == set(targets), f"targets missing from the Release configure: {set(targets) - defined}")

# --- COPY sources exist and are not excluded by .dockerignore
with open(os.path.join(d.SOURCE_DIR, ".dockerignore")) as f:
    ignore = [l.strip() for l in f if l.strip() and not l.startswith("#")]
def ignored(rel):
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.rstrip("/")) or
               rel.startswith(p.rstrip("/") + "/") for p in ignore)
for op, arg in build + runtime:
    if op != "COPY" or arg.startswith("--from"):
        continue
    srcs = shlex.split(arg)[:-1]
    for s in srcs:
        if s == ".":
            continue
        d.check(os.path.exists(os.path.join(d.SOURCE_DIR, s)), f"COPY source {s} does not exist")
        d.check(not ignored(s), f"COPY source {s} is excluded by .dockerignore")
for must in ("**/build-*", "deploy/secrets/", ".git"):
    d.check(must in ignore, f".dockerignore must exclude {must}")

# --- runtime stage
copies = [a for op, a in runtime if op == "COPY"]
d.check(all(a.startswith("--from=build /out/bin/") or not a.startswith("--from") for a in copies),
        "the runtime stage takes only /out/bin from the build stage")
user = [a for op, a in runtime if op == "USER"]
d.check(user and not user[-1].startswith(("root", "0")), f"runtime must run as non-root, USER {user}")
uid = re.search(r"useradd[^&]*--uid (\d+)", " ".join(a for op, a in runtime if op == "RUN"))
d.check(uid and int(uid.group(1)) != 0, "useradd with a fixed non-zero uid")
env = {}
for op, a in runtime:
    if op == "ENV":
        env.update(dict(kv.split("=", 1) for kv in shlex.split(a)))
d.check(set(env) <= set(d.DAEMON_ENV), f"ENV names variables no flag reads: {set(env) - set(d.DAEMON_ENV)}")
exposed = set(" ".join(a for op, a in runtime if op == "EXPOSE").split())
want = {env["DELTASERVE_LISTEN"].rsplit(":", 1)[1], env["DELTASERVE_METRICS_LISTEN"].rsplit(":", 1)[1]}
d.check(exposed == want, f"EXPOSE {exposed} != listening ports {want}")
hc = [a for op, a in runtime if op == "HEALTHCHECK"]
d.check(hc and "CMD" in hc[0], "runtime needs a HEALTHCHECK")
hc_cmd = re.search(r'CMD \["([^"]+)"', hc[0]).group(1)
ep = re.search(r'\["([^"]+)"\]', [a for op, a in runtime if op == "ENTRYPOINT"][0]).group(1)
installed = {shlex.split(a)[-1].rstrip("/") + "/" + os.path.basename(s) if shlex.split(a)[-1].endswith("/")
             else shlex.split(a)[-1] for a in copies for s in shlex.split(a)[:-1] if not s.startswith("--")}
for cmd in (hc_cmd, ep):
    d.check(any(i.endswith("/" + cmd) for i in installed), f"{cmd} is not copied into the image")

# --- runtime packages exist in Debian 12
listed = []
with open(os.path.join(d.DOCKER_DIR, "runtime-packages.txt")) as f:
    for l in f:
        l = l.split("#", 1)[0].strip()
        if l:
            listed.append(l)
# Installed packages answer from dpkg's database at once; the rest ask apt (one call: slow).
r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\\n"] + listed, capture_output=True, text=True)
installed_pkgs = {l.split()[0] for l in r.stdout.splitlines() if l.endswith("install ok installed")}
rest = [p for p in listed if p not in installed_pkgs]
unknown = []
if rest:
    r = subprocess.run(["apt-cache", "policy"] + rest, capture_output=True, text=True, timeout=40)
    known = {}
    cur = None
    for l in r.stdout.splitlines():
        if l and not l.startswith(" "):
            cur = l.rstrip(":")
        elif cur and l.strip().startswith("Candidate:"):
            known[cur] = l.split(":", 1)[1].strip() != "(none)"
    unknown = [p for p in rest if not known.get(p)]
d.check(not unknown, f"runtime-packages.txt names packages apt does not know: {unknown}")
d.log(f"PASS: Dockerfile: 2 stages on Debian 12, {len(listed)} runtime packages known to apt, "
      f"user uid {uid.group(1)}, EXPOSE {sorted(exposed)}, HEALTHCHECK {hc_cmd}, ENTRYPOINT {ep}")
