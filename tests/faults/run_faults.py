#!/usr/bin/python3
"""Bounded loopback fault injection against a loaded deltaserved (issue 12).

Rounds (each against a daemon under a background load of pulls):
  disk    the database on a 64 MiB tmpfs: push until RESOURCE_EXHAUSTED "disk full", check
          the daemon is up and serves reads, delete 3 tasks, time until a push succeeds.
  emfile  lower the running daemon's soft RLIMIT_NOFILE (prlimit) to the descriptors it has
          open (its accept4() then fails with EMFILE), push (expected to fail), restore
          the limit, time until a push succeeds (no restart: the daemon's own accept
          loop retries, server/internal/listener.h).
  kill9   SIGKILL during a push, restart, time until get-base answers; every task
          acknowledged before is still listed.
Then: SIGTERM of the idle daemon (exit time), and optionally (--wal-tasks N) N pushes of
the task to a disk-backed store, its size on disk and the restart time.

Prints one line per round and a summary; exit 1 if any round failed. Needs the built
deltaserved/deltactl, ../shared/models/faceres, root for the tmpfs (disk rounds are
skipped with a message otherwise) and prlimit (util-linux) for the emfile rounds.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, args, db, log):
        self.args, self.db, self.log = args, db, log
        self.port = free_port()
        self.proc = None
        self.extra = ()

    def start(self, extra=None):
        if extra is not None:
            self.extra = tuple(extra)
        cmd = [self.args.deltaserved, "--base", self.args.base, "--db", self.db,
               "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", "",
               "--workers", "2", "--cache-bytes", str(64 << 20), "--drain-seconds", "5",
               *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if self.proc.poll() is not None:
                raise RuntimeError(f"deltaserved exited {self.proc.returncode} at start")
            if ctl(self, "get-base").returncode == 0:
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError("deltaserved did not answer within 30 s")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def ctl(d, *args, timeout=60):
    return subprocess.run([d.args.deltactl, *args, "--server", f"127.0.0.1:{d.port}"],
                          capture_output=True, text=True, timeout=timeout)


def push(d, task, timeout_s=60):
    return ctl(d, "push", "--task", task, "--in", d.args.container, "--timeout", str(timeout_s))


def listed(d):
    r = ctl(d, "list")
    return {line.split()[1] for line in r.stdout.splitlines()[1:] if len(line.split()) > 5}


class Load:
    """Background pulls of one task, counting failures that are not expected."""

    def __init__(self, d, task, out):
        self.d, self.task, self.out = d, task, out
        self.ok = self.failed = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop:
            if not self.d.alive():
                time.sleep(0.05)
                continue
            r = ctl(self.d, "pull", "--task", self.task, "--out", self.out, timeout=120)
            if r.returncode == 0:
                self.ok += 1
            elif self.d.alive() and "UNAVAILABLE" not in r.stderr:
                self.failed += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()


def wait_push(d, name, limit_s=30):
    """Seconds until a push of `name` succeeds, or None (then d.last_error says why)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        r = push(d, name, timeout_s=5)
        if r.returncode == 0:
            return time.monotonic() - t0
        d.last_error = r.stderr.strip()[-300:]
        time.sleep(0.05)
    return None


def round_disk(d, i):
    n, err = 0, ""
    while n < 200:
        r = push(d, f"disk{i}-{n}")
        if r.returncode != 0:
            err = r.stderr
            break
        n += 1
    problems = []
    if not ("RESOURCE_EXHAUSTED" in err and "disk full" in err):
        problems.append(f"refusal: {err.strip()[:300]}")
    if not d.alive():
        problems.append("daemon died")
    r = ctl(d, "pull", "--task", "load", "--out", os.devnull)
    if r.returncode != 0:
        problems.append(f"read: {r.stderr.strip()[:200]}")
    for k in range(min(3, n)):
        r = ctl(d, "delete", "--task", f"disk{i}-{k}")
        if r.returncode != 0:
            problems.append(f"delete: {r.stderr.strip()[:200]}")
    rec = wait_push(d, f"disk{i}-after")
    ok = not problems
    for k in range(3, n):
        ctl(d, "delete", "--task", f"disk{i}-{k}")
    ctl(d, "delete", "--task", f"disk{i}-after")
    return ok and rec is not None, rec, "; ".join([f"{n} pushes before disk full"] + problems)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def round_emfile(d, i):
    pid = d.proc.pid
    soft, hard = subprocess.run(["prlimit", f"--pid={pid}", "--nofile", "--raw", "--noheadings",
                                 "--output=SOFT,HARD"], capture_output=True, text=True,
                                check=True).stdout.split()
    low = open_fds(pid)
    # Only the soft limit: raising it back needs no privilege.
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={low}:{hard}"], check=True)
    fails = sum(push(d, f"emfile{i}-{k}", timeout_s=5).returncode != 0 for k in range(8))
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:{hard}"], check=True)
    rec = wait_push(d, f"emfile{i}-after")
    ok = d.alive() and rec is not None
    note = f"{fails}/8 pushes failed at nofile={low}"
    if rec is None:
        # Not expected any more (gRPC 1.51's own listener stopped accepting after one
        # accept4() EMFILE): restart so that the next rounds run.
        d.proc.kill()
        d.proc.wait()
        d.start()
        note += f"; no push succeeded after the limit was restored ({d.last_error}): restarted"
    for k in range(8):
        ctl(d, "delete", "--task", f"emfile{i}-{k}", "--timeout", "5")
    ctl(d, "delete", "--task", f"emfile{i}-after", "--timeout", "5")
    return ok, rec, note


def round_kill9(d, i):
    before = listed(d)
    pusher = subprocess.Popen([d.args.deltactl, "push", "--task", f"kill{i}", "--in",
                               d.args.container, "--server", f"127.0.0.1:{d.port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.02 * (i % 5))
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    acked = pusher.wait() == 0
    rec = d.start()
    after = listed(d)
    ok = before <= after and (not acked or f"kill{i}" in after)
    ctl(d, "delete", "--task", f"kill{i}")
    return ok, rec, f"push acknowledged={acked}, {len(after)} tasks listed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    ap.add_argument("--wal-tasks", type=int, default=0, help="also push N tasks and measure")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    args.deltaserved = os.path.join(args.build, "server", "deltaserved")
    args.deltactl = os.path.join(args.build, "client", "deltactl")
    models = os.path.join(ROOT, "..", "shared", "models", "faceres")
    tmp = tempfile.mkdtemp(prefix="faults-")
    results = []
    try:
        base, ft = os.path.join(tmp, "base.safetensors"), os.path.join(tmp, "ft.safetensors")
        args.container = os.path.join(tmp, "deep.dds")
        for src, dst in (("faceres.json", base), ("faceres-deep.json", ft)):
            subprocess.run([args.deltactl, "convert", "--in", os.path.join(models, src),
                            "--out", dst], check=True, capture_output=True)
        subprocess.run([args.deltactl, "compress", "--codec", "dct", "--base", base,
                        "--finetuned", ft, "--out", args.container], check=True,
                       capture_output=True)
        args.base = base
        print(f"task container: {os.path.getsize(args.container)} bytes")
        log = open(os.path.join(tmp, "daemon.log"), "w")
        mnt = os.path.join(tmp, "mnt")
        os.makedirs(mnt)
        tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt],
                               capture_output=True).returncode == 0
        if not tmpfs:
            print("disk rounds skipped: cannot mount a tmpfs (needs root)")
        d = Daemon(args, os.path.join(mnt if tmpfs else tmp, "db"), log)
        d.start(["--db-min-free-bytes", str(16 << 20)])
        if push(d, "load").returncode != 0:
            raise RuntimeError("first push failed")
        kinds = ([("disk", round_disk)] if tmpfs else []) + [("emfile", round_emfile),
                                                              ("kill9", round_kill9)]
        with Load(d, "load", os.path.join(tmp, "pulled.safetensors")) as load:
            for i in range(args.rounds):
                for name, fn in kinds:
                    ok, rec, note = fn(d, i)
                    results.append((name, ok, rec))
                    print(f"round {i + 1} {name:6s} {'ok' if ok else 'FAILED'}  recovery "
                          f"{'-' if rec is None else f'{rec * 1000:.0f} ms'}  ({note})",
                          flush=True)
        print(f"background pulls: {load.ok} ok, {load.failed} unexpected failures")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        code = d.proc.wait()
        print(f"SIGTERM of the idle daemon: exit {code} after {(time.monotonic() - t0) * 1000:.0f} ms")
        if tmpfs:
            subprocess.run(["umount", "-l", mnt])
        if args.wal_tasks:
            w = Daemon(args, os.path.join(tmp, "waldb"), log)
            w.start()
            t0 = time.monotonic()
            for k in range(args.wal_tasks):
                if push(w, f"w{k}").returncode != 0:
                    raise RuntimeError(f"push {k} failed")
            secs = time.monotonic() - t0
            data = args.wal_tasks * os.path.getsize(args.container)
            w.proc.send_signal(signal.SIGTERM)
            w.proc.wait()
            disk = sum(os.path.getsize(os.path.join(w.db, f)) for f in os.listdir(w.db))
            wal = sum(os.path.getsize(os.path.join(w.db, f)) for f in os.listdir(w.db)
                      if f.endswith(".log"))
            restart = w.start()
            print(f"{args.wal_tasks} pushes in {secs:.1f} s: data {data} bytes, on disk {disk} "
                  f"({disk / data:.3f}x, WAL {wal}), restart to first answer {restart * 1000:.0f} ms")
            w.proc.send_signal(signal.SIGTERM)
            w.proc.wait()
        failed = [r for r in results if not r[1]] + ([1] if load.failed else [])
        recs = sorted(r[2] for r in results if r[2] is not None)
        if recs:
            print(f"summary: {len(results)} rounds, {len(failed)} failed; recovery min "
                  f"{recs[0] * 1000:.0f} ms, median {recs[len(recs) // 2] * 1000:.0f} ms, "
                  f"max {recs[-1] * 1000:.0f} ms")
        if failed:
            log.flush()
            with open(os.path.join(tmp, "daemon.log")) as f:
                tail = [l for l in f.read().splitlines() if "code=OK" not in l][-15:]
            print("daemon log (last lines that are not OK requests):\n  " + "\n  ".join(tail))
        return 1 if failed else 0
    finally:
        subprocess.run(["umount", "-l", os.path.join(tmp, "mnt")], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
