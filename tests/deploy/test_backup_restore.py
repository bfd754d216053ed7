"""deploy_backup_restore: the backup procedures, for real.

Offline (deploy/README.md): a daemon with a pushed task is stopped with SIGTERM (exit 0),
its RocksDB directory copied with `cp -a`, and a new daemon started on the copy serves the
task: the same bytes as the pull before the backup.

Online (issue 12, reproduction 4): `deltactl admin checkpoint --dir` against a running
daemon (a tenant token is refused PERMISSION_DENIED, an existing directory
INVALID_ARGUMENT); a second daemon started on the checkpoint serves the task bit-identically
while the first one keeps serving."""
import filecmp
import os
import subprocess
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")

with tempfile.TemporaryDirectory(prefix="deploy-backup-") as tmp:
    ds = d.Deltaserve(tmp, deltaserved, deltactl)
    ds.push("backed-up", ds.compress())
    before = ds.pull("backed-up")
    code = ds.stop()
    d.check(code == 0, f"SIGTERM before the backup: exit {code}")
    backup = os.path.join(tmp, "backup", "db")
    os.makedirs(os.path.dirname(backup))
    d.run(["cp", "-a", ds.db, backup])
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(backup) for f in fs)
    d.log(f"backup: cp -a of the stopped RocksDB dir, {size} bytes")
    # Restore into a fresh directory: the original is gone.
    restored_tmp = os.path.join(tmp, "restored")
    os.makedirs(restored_tmp)
    d.run(["cp", "-a", backup, os.path.join(restored_tmp, "db")])
    d.run(["rm", "-rf", ds.db])
    ds2 = d.Deltaserve(restored_tmp, deltaserved, deltactl, db=os.path.join(restored_tmp, "db"))
    try:
        listed = ds2.deltactl(["list"]).stdout
        d.check("backed-up" in listed, f"restored daemon does not list the task: {listed}")
        after = ds2.pull("backed-up")
        d.check(filecmp.cmp(before, after, shallow=False), "pull after restore differs from pull before")
    finally:
        code = ds2.stop()
    d.check(code == 0, f"restored daemon SIGTERM: exit {code}")
    d.log(f"PASS: restored from a stopped-daemon copy; pull bit-identical ({os.path.getsize(after)} bytes)")


with tempfile.TemporaryDirectory(prefix="deploy-checkpoint-") as tmp:
    ds = d.Deltaserve(tmp, deltaserved, deltactl)
    ds.push("live", ds.compress())
    before = ds.pull("live")
    dest = os.path.join(tmp, "checkpoint")

    def checkpoint(token):
        return d.run([deltactl, "admin", "checkpoint", "--server", ds.addr, "--token", token,
                      "--dir", dest], env=d.clean_env(), check_rc=False)

    r = checkpoint(d.ACME_TOKEN)
    d.check(r.returncode != 0 and "PERMISSION_DENIED" in r.stderr,
            f"a tenant token must be refused: {r.returncode} {r.stderr}")
    r = checkpoint(d.ADMIN_TOKEN)
    d.check(r.returncode == 0, f"deltactl admin checkpoint: {r.returncode} {r.stderr}")
    d.check(r.stdout.startswith(f"checkpoint {dest}: ") and f"deltaserved --db {dest}" in r.stdout,
            f"unexpected output: {r.stdout}")
    d.log(r.stdout.strip())
    r = checkpoint(d.ADMIN_TOKEN)
    d.check(r.returncode != 0 and "INVALID_ARGUMENT" in r.stderr and "already exists" in r.stderr,
            f"a second checkpoint into the same directory must be refused: {r.stderr}")
    served = os.path.join(tmp, "served")
    os.makedirs(served)
    ds2 = d.Deltaserve(served, deltaserved, deltactl, db=dest)
    try:
        after = ds2.pull("live")
        d.check(filecmp.cmp(before, after, shallow=False),
                "pull from the checkpoint differs from the pull before")
        d.check(ds.deltactl(["list"]).returncode == 0, "the live daemon stopped serving")
    finally:
        code2, code = ds2.stop(), ds.stop()
    d.check(code == 0 and code2 == 0, f"SIGTERM: exit {code}, {code2}")
    d.log(f"PASS: online checkpoint served by a second daemon; pull bit-identical "
          f"({os.path.getsize(after)} bytes)")
