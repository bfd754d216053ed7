"""deploy_ingest_flag: deltaserved --ingest-min-bytes (StoreOptions::ingest_min_bytes).

A negative, non-numeric or out-of-range value, on the command line or in
DELTASERVE_INGEST_MIN_BYTES, fails start-up with exit code != 0 and a message naming the
flag, before the base is loaded. A valid value takes effect: with --ingest-min-bytes 1 a
push lands in the database as an ingested table file (*.sst) at once; with a value above
the container's size the same push goes through the write-ahead log and leaves no table
file. Both pulls are bit-identical.

Every other byte-count flag (--cache-bytes, --chunk-bytes, --prefetch-bytes,
--max-upload-bytes, --grpc-memory-bytes, --db-min-free-bytes, --upload-buffer-cache-bytes)
refuses "-1" the same way:
CLI11 alone read it as 2^64 - 1."""
import filecmp
import glob
import os
import subprocess
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")


def refused(args, env_extra=None, flag="--ingest-min-bytes"):
    d.refused_at_parse(deltaserved, args, flag, env_extra)


for bad in ["-1", "abc", "12x", "", "18446744073709551616"]:
    refused(["--ingest-min-bytes", bad])
refused([], {"DELTASERVE_INGEST_MIN_BYTES": "-5"})
for flag in ["--cache-bytes", "--chunk-bytes", "--prefetch-bytes", "--max-upload-bytes",
             "--grpc-memory-bytes", "--db-min-free-bytes", "--upload-buffer-cache-bytes"]:
    refused([flag, "-1"], flag=flag)
    refused([flag, "1e9"], flag=flag)
refused([], {"DELTASERVE_CACHE_BYTES": "-1"}, flag="--cache-bytes")

with tempfile.TemporaryDirectory(prefix="deploy-ingest-") as tmp:
    pulls = {}
    for name, value in [("ingest", "1"), ("wal", str(1 << 40))]:
        work = os.path.join(tmp, name)
        os.makedirs(work)
        # The log path also runs with upload mappings never reused (0): the flag is
        # accepted and a push still lands whole.
        extra = ["--ingest-min-bytes", value]
        if name == "wal":
            extra += ["--upload-buffer-cache-bytes", "0"]
        ds = d.Deltaserve(work, deltaserved, deltactl, extra_flags=extra)
        try:
            delta = ds.compress()
            ds.push("t", delta)
            tables = glob.glob(os.path.join(ds.db, "*.sst"))
            want = "0" if name == "wal" else str(512 << 20)
            d.check(f"upload_buffer_cache_bytes={want}" in ds.daemon.log_text(),
                    f"the serving line does not say upload_buffer_cache_bytes={want}:\n"
                    f"{ds.daemon.log_text()[-2000:]}")
            pulls[name] = ds.pull("t")
        finally:
            code = ds.stop()
        d.check(code == 0, f"--ingest-min-bytes {value}: SIGTERM exit {code}")
        if name == "ingest":
            d.check(tables, f"--ingest-min-bytes 1: no table file after the push of "
                    f"{os.path.getsize(delta)} bytes: {os.listdir(ds.db)}")
        else:
            d.check(not tables, f"--ingest-min-bytes {value}: a {os.path.getsize(delta)}-byte "
                    f"push made table files {tables} (should go through the log)")
        d.log(f"--ingest-min-bytes {value}: push of {os.path.getsize(delta)} bytes, "
              f"{len(tables)} table files right after it")
    d.check(filecmp.cmp(pulls["ingest"], pulls["wal"], shallow=False),
            "pulls after an ingested and a logged commit differ")
    d.log("PASS: bad values refused; the flag picks ingestion or the log; pulls identical")
