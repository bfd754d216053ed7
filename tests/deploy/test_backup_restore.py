"""deploy_backup_restore: the backup procedure of deploy/README.md, for real. A daemon with
a pushed task is stopped with SIGTERM (exit 0), its RocksDB directory copied with
`cp -a`, and a new daemon started on the copy serves the task: the same bytes as the pull
before the backup."""
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
