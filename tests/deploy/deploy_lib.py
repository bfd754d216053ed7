"""Shared helpers of the deployment tests (tests/deploy/test_*.py).

Real processes only: deltaserved, deltactl, prometheus, promtool, docker-compose and
curl are run as subprocesses on loopback with free ports and temporary directories.
A test calls skip() (exit code 77, ctest SKIP_RETURN_CODE) when a binary it needs is
missing, and fail() (exit 1) on a broken assertion; both print one clear line.

Environment (set by tests/deploy/CMakeLists.txt):
  DELTASERVE_SOURCE_DIR   repository root
  DELTASERVED_BIN         path of the built deltaserved ("" when the target does not exist)
  DELTACTL_BIN            path of the built deltactl ("" likewise)
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SKIP = 77
SOURCE_DIR = os.environ.get(
    "DELTASERVE_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
DEPLOY_DIR = os.path.join(SOURCE_DIR, "deploy")
DOCKER_DIR = os.path.join(SOURCE_DIR, "docker")

# The tokens of deploy/secrets.example/tenants.json (the tests run the real example file).
EXAMPLE_CONFIG = os.path.join(DEPLOY_DIR, "secrets.example", "tenants.json")


def log(msg):
    print(msg, flush=True)


def skip(msg):
    print("SKIP: " + msg, flush=True)
    sys.exit(SKIP)


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def need_binary(env_name, name):
    """Path of a built binary from $env_name, else skip."""
    path = os.environ.get(env_name, "")
    if not path or not os.access(path, os.X_OK):
        skip(f"{name} is not built (${env_name}={path!r}); build targets deltaserved deltactl")
    return path


def need_tool(name):
    path = shutil.which(name)
    if path is None:
        skip(f"{name} is not installed (deploy/install-deps.sh installs it)")
    return path


def _ephemeral_range():
    """(low, high) of the ports the kernel picks itself (port 0, outgoing connections)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port():
    """A port on 127.0.0.1 that was free a moment ago, drawn at random outside the
    kernel's ephemeral range: no port-0 listener and no outgoing connection (of this
    test or a parallel one) can be given it before the caller binds it, as could happen
    to a port bound to 0 and released (a start then failed "address in use"). For
    deltaserved, listen on port 0 and read the ports with serving_ports() instead; this
    is for tools that cannot tell which port they picked (Prometheus, Swift, etcd)."""
    import random
    low, high = _ephemeral_range()
    candidates = [(10000, low - 1), (high + 1, 65535)]
    candidates = [(a, b) for a, b in candidates if b >= a]
    if not candidates:  # the whole range is ephemeral: the racy way is the only one
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    sizes = [b - a + 1 for a, b in candidates]
    for _ in range(200):
        k = random.randrange(sum(sizes))
        for (a, _), n in zip(candidates, sizes):
            if k < n:
                port = a + k
                break
            k -= n
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
            return port
    fail("no free port outside the ephemeral range after 200 draws")


def http_get(url, timeout=5.0):
    """(status, body text); status 0 when the connection fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
        return 0, ""


def wait_until(pred, timeout, what, proc=None, interval=0.2):
    """Polls pred() until it returns a truthy value; fails after `timeout` seconds, or
    at once if `proc` (a Daemon or Popen) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            fail(f"{what}: process exited with code {proc.poll()} first"
                 + (f"\n--- its log ---\n{proc.log_text()}" if hasattr(proc, "log_text") else ""))
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def serving_ports(daemon, timeout=60):
    """(gRPC port, metrics port) of a deltaserved started with port 0 (and --metrics-listen
    on port 0 or off: metrics port 0), from its "serving ... port=N metrics_port=M" log
    line (or its --log-format json form), which it prints once it listens on both. Fails
    after `timeout` s or if the daemon exits first."""
    def ports():
        text = daemon.log_text()
        m = (re.search(r"\bserving\b.*\bport=(\d+).*\bmetrics_port=(\d+)", text) or
             re.search(r'"msg":"serving".*"port":"(\d+)".*"metrics_port":"(\d+)"', text))
        return (int(m.group(1)), int(m.group(2))) if m else None
    return wait_until(ports, timeout, "deltaserved's 'serving' log line", daemon)


# ---------------------------------------------------------------- synthetic models
def write_safetensors(path, tensors, metadata=None):
    """Writes {name: (shape, list-of-float32)} as an F32 safetensors file (the format:
    8-byte little-endian header length, JSON header, raw little-endian data)."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def safetensors_data_bytes(path):
    """Sum of the tensors' data bytes of a safetensors file (header excluded)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(v["data_offsets"][1] - v["data_offsets"][0]
               for k, v in header.items() if k != "__metadata__")


def make_model_pair(directory, seed=7):
    """A small synthetic base and a 'finetuned' variant (base + small structured delta):
    two 2-D matrices the codec compresses with Delta-DCT plus a bias it stores as is.
    Returns (base_path, finetuned_path). Deterministic."""
    import random
    rng = random.Random(seed)
    shapes = {"layers.0.attn.weight": (64, 128), "layers.0.mlp.weight": (128, 64),
              "layers.0.mlp.bias": (64,)}
    base, ft = {}, {}
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        b = [rng.gauss(0.0, 0.05) for _ in range(n)]
        # Smooth (low-frequency) delta, like a finetune's: DCT compresses it well.
        cols = shape[-1]
        d = [0.004 * ((i // cols) % 7 - 3) + 0.002 * ((i % cols) % 5 - 2) + rng.gauss(0.0, 0.0005)
             for i in range(n)]
        base[name] = (shape, b)
        ft[name] = (shape, [x + y for x, y in zip(b, d)])
    base_path = os.path.join(directory, "base.safetensors")
    ft_path = os.path.join(directory, "finetuned.safetensors")
    write_safetensors(base_path, base, {"format": "pt", "source": "tests/deploy synthetic base"})
    write_safetensors(ft_path, ft, {"format": "pt"})
    return base_path, ft_path


# ---------------------------------------------------------------- processes
_CHILDREN = []  # Popen objects


@atexit.register
def _kill_leftovers():
    # fail()/skip() exit from anywhere; no process of a test may outlive it.
    for proc in _CHILDREN:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_at_exit(proc):
    """Registers a subprocess.Popen to be killed when the test exits."""
    _CHILDREN.append(proc)
    return proc


class Daemon:
    """A background process whose stdout+stderr go to a log file (killed at exit)."""

    def __init__(self, argv, log_path, env=None, cwd=None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid
        kill_at_exit(self.proc)

    def poll(self):
        return self.proc.poll()

    def log_text(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-6000:]

    def terminate(self, timeout=45.0):
        """SIGTERM, then wait; returns the exit code (SIGKILL after `timeout`, code None)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def refused_at_parse(deltaserved, args, flag, env_extra=None):
    """Checks that deltaserved refuses `args` (and env_extra) while parsing flags: exit
    code 2 (usage), a message naming `flag`, and no attempt to open the (nonexistent) base."""
    r = subprocess.run([deltaserved, "--base", "/nonexistent/base.safetensors"] + args,
                       env=clean_env(env_extra), capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    check(r.returncode == 2, f"deltaserved {args} {env_extra or ''}: exit {r.returncode}, "
          f"wanted 2 (a usage error)")
    check(flag in out, f"deltaserved {args} {env_extra or ''}: the message "
          f"does not name {flag}:\n{out}")
    check("nonexistent" not in out, f"deltaserved {args}: got past flag parsing:\n{out}")
    log(f"refused {args or env_extra}: exit {r.returncode}: {out.strip().splitlines()[0]}")


def run(argv, timeout=60, env=None, check_rc=True, what=None):
    """Runs a command; returns CompletedProcess (text). Fails the test on a non-zero exit
    when check_rc."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check_rc and r.returncode != 0:
        fail(f"{what or ' '.join(argv)} exited {r.returncode}\nstdout: {r.stdout[-3000:]}\n"
             f"stderr: {r.stderr[-3000:]}")
    return r


def healthcheck(addr, env=None, service=""):
    """docker/healthcheck.sh against addr; returns (exit code, output)."""
    argv = [os.path.join(DOCKER_DIR, "healthcheck.sh"), addr]
    if service:
        argv.append(service)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=15, env=env)
    return r.returncode, (r.stdout + r.stderr).strip()


def metric_names(text):
    """Sample names in a Prometheus text exposition (the _bucket/_sum/_count series
    of a histogram included)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if m:
                names.add(m.group(1))
    return names


def metric_families(text):
    """{family name: type} from the '# TYPE' lines of a text exposition."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            out[parts[2]] = parts[3]
    return out


def sample_values(text, name):
    """{labels-string: value} for every sample of metric `name`."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


# ---------------------------------------------------------------- deployment files
# The daemon's metric families (the server spec; server/internal/metrics.h). Histograms
# are exposed as <name>_bucket/_sum/_count.
SPEC_METRICS = {
    "deltaserve_requests_total": "counter",
    "deltaserve_request_duration_seconds": "histogram",
    "deltaserve_streamed_bytes_total": "counter",
    "deltaserve_uploaded_bytes_total": "counter",
    "deltaserve_decode_seconds": "histogram",
    "deltaserve_merge_seconds": "histogram",
    "deltaserve_cache_hits_total": "counter",
    "deltaserve_cache_misses_total": "counter",
    "deltaserve_cache_evictions_total": "counter",
    "deltaserve_cache_bytes": "gauge",
    "deltaserve_streams_in_flight": "gauge",
    "deltaserve_admitted_calls": "gauge",
    "deltaserve_admission_rejected_total": "counter",
    "deltaserve_tenant_tasks": "gauge",
    "deltaserve_tenant_stored_bytes": "gauge",
    "deltaserve_base_bytes": "gauge",
    "deltaserve_base_tensors": "gauge",
    "deltaserve_build_info": "gauge",
    "deltaserve_streams_stalled": "gauge",
    "deltaserve_store_free_bytes": "gauge",
    "deltaserve_store_writes_blocked": "gauge",
    "deltaserve_open_files_limit": "gauge",
    "deltaserve_connections": "gauge",
    "deltaserve_connections_limit": "gauge",
    "deltaserve_connections_refused_total": "counter",
    "deltaserve_serving": "gauge",
    "deltaserve_merge_saturated_values_total": "counter",
}

# The standard process metrics (server/internal/process_metrics.h), named as by the
# Prometheus client libraries.
PROCESS_METRICS = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_threads": "gauge",
    "process_start_time_seconds": "gauge",
}

# deltaserved's flags (server spec), each also read from DELTASERVE_<UPPER_SNAKE>.
DAEMON_FLAGS = ["base", "db", "listen", "metrics-listen", "config", "tls-cert", "tls-key",
                "cache-bytes", "pretouch-cache", "workers", "chunk-bytes", "prefetch-tensors", "max-upload-bytes", "max-uploads",
                "max-streams", "max-connections", "grpc-memory-bytes", "preload",
                "drain-seconds", "db-min-free-bytes", "ingest-min-bytes", "upload-buffer-cache-bytes",
                "stall-seconds", "write-timeout-seconds",
                "keepalive-seconds", "keepalive-timeout-seconds", "min-client-ping-seconds",
                "log-format"]
DAEMON_ENV = {"DELTASERVE_" + f.upper().replace("-", "_"): "--" + f for f in DAEMON_FLAGS}


def expand_series_names(family_names):
    """Series names of metric families: a histogram is its _bucket/_sum/_count series."""
    out = set()
    for name in family_names:
        if SPEC_METRICS.get(name) == "histogram":
            out |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            out.add(name)
    return out


def deltaserve_names_in(expr):
    return set(re.findall(r"\bdeltaserve_[a-z0-9_]+", expr))


def process_names_in(expr):
    return set(re.findall(r"\bprocess_[a-z0-9_]+", expr))


def dashboard_path():
    return os.path.join(DEPLOY_DIR, "grafana", "dashboards", "deltaserve.json")


def dashboard_queries():
    """[(panel title, refId, expr)] of every panel target in the dashboard, plus the
    templating queries (refId 'var:<name>')."""
    with open(dashboard_path()) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t.get("refId", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            out.append(("variable " + v["name"], "var:" + v["name"], q))
    return out


def alert_queries():
    import yaml
    with open(os.path.join(DEPLOY_DIR, "prometheus", "alerts.yml")) as f:
        doc = yaml.safe_load(f)
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def to_promql(expr):
    """A dashboard expression with Grafana's variables replaced for the Prometheus API."""
    e = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    e = e.replace('=~"$instance"', '=~".*"')
    m = re.match(r"label_values\((\w+),\s*(\w+)\)", e)
    if m:  # a Grafana templating function: the equivalent series query
        e = f"group by ({m.group(2)}) ({m.group(1)})"
    return e


def compose_config():
    """`docker-compose config` of deploy/docker-compose.yml in a clean environment (no
    DELTASERVE_* overrides from the caller, no deploy/.env), parsed."""
    import yaml
    tool = need_tool("docker-compose")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        r = run([tool, "--env-file", empty.name, "-f", os.path.join(DEPLOY_DIR, "docker-compose.yml"),
                 "config"], env=env, what="docker-compose config")
    return yaml.safe_load(r.stdout), r.stderr


# ---------------------------------------------------------------- deltaserved + deltactl
ACME_TOKEN = "CHANGE-ME-acme-token"  # deploy/secrets.example/tenants.json
ADMIN_TOKEN = "CHANGE-ME-admin-token"


class Deltaserve:
    """deltaserved on loopback (free ports, DB in `tmp`) over a synthetic base, with the
    example tenants config; `deltactl` commands against it."""

    def __init__(self, tmp, deltaserved, deltactl, config=EXAMPLE_CONFIG, extra_flags=(), db=None,
                 log_name="deltaserved.log"):
        self.tmp = tmp
        self.deltactl_bin = deltactl
        self.model_dir = os.path.join(tmp, "models")
        os.makedirs(self.model_dir, exist_ok=True)
        self.base, self.finetuned = make_model_pair(self.model_dir)
        self.db = db or os.path.join(tmp, "db")
        # Port 0: the daemon binds free ports itself and logs them (a port picked here
        # and bound later could be taken meanwhile, e.g. as an outgoing connection's).
        argv = [deltaserved, "--base", self.base, "--db", self.db, "--listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--config", config,
                "--workers", "2", "--drain-seconds", "5"] + list(extra_flags)
        self.daemon = Daemon(argv, os.path.join(tmp, log_name), env=clean_env())
        self.grpc_port, self.metrics_port = serving_ports(self.daemon)
        self.addr = f"127.0.0.1:{self.grpc_port}"
        self.wait_ready()

    def metrics_url(self):
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def wait_ready(self, timeout=30):
        wait_until(lambda: healthcheck(self.addr)[0] == 0, timeout, f"deltaserved on {self.addr} SERVING",
                   self.daemon)
        wait_until(lambda: http_get(self.metrics_url())[0] == 200, timeout, "the /metrics endpoint",
                   self.daemon)

    def metrics(self):
        status, text = http_get(self.metrics_url())
        check(status == 200, f"GET {self.metrics_url()} -> {status}")
        return text

    def deltactl(self, args, token=ACME_TOKEN, timeout=50):
        argv = [self.deltactl_bin] + args
        if token is not None:
            argv[2:2] = ["--server", self.addr, "--token", token]
        return run(argv, timeout=timeout, env=clean_env(), what="deltactl " + " ".join(args[:1]))

    def compress(self):
        out = os.path.join(self.tmp, "task.dds")
        # Delta-DCT: the fast encoder (these tests are about the server, not the codec).
        run([self.deltactl_bin, "compress", "--codec", "dct", "--base", self.base,
             "--finetuned", self.finetuned, "--out", out], env=clean_env(),
            what="deltactl compress")
        return out

    def push(self, task, delta, token=ACME_TOKEN):
        return self.deltactl(["push", "--task", task, "--in", delta], token)

    def pull(self, task, token=ACME_TOKEN):
        out = os.path.join(self.tmp, f"{task}.merged.safetensors")
        self.deltactl(["pull", "--task", task, "--out", out], token)
        return out

    def stop(self):
        code = self.daemon.terminate()
        self.daemon.stop()
        return code


def metrics_after_traffic(task="traffic"):
    """Starts deltaserved (skips if it or deltactl is not built), pushes and pulls one task
    so that every labelled family has series, and returns its /metrics text."""
    deltaserved = need_binary("DELTASERVED_BIN", "deltaserved")
    deltactl = need_binary("DELTACTL_BIN", "deltactl")
    with tempfile.TemporaryDirectory(prefix="deploy-metrics-") as tmp:
        ds = Deltaserve(tmp, deltaserved, deltactl)
        try:
            ds.push(task, ds.compress())
            ds.pull(task)
            return ds.metrics()
        finally:
            ds.stop()


def clean_env(extra=None):
    """The caller's environment without DELTASERVE_* variables (they would configure the
    daemon behind the test's back), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTASERVE_")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env
