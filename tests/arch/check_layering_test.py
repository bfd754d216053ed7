#!/usr/bin/env python3
"""Self-test of check_layering.py: a tree with known violations yields exactly them."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import check_layering  # noqa: E402


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def main():
    with tempfile.TemporaryDirectory() as root:
        write(root, "codec/a.cc", '#include "codec/internal/x.h"\n#include "common/json.h"\n')
        write(root, "codec/b.cc", '#include "storage/store.h"\n#include <rocksdb/db.h>\n')
        write(root, "server/c.cc", '#include "codec/internal/dct.h"\n#include "deltaserve/v1/x.pb.h"\n')
        write(root, "client/d.cc", '#include "server/server.h"\n')
        write(root, "storage/e.cc", '#include "grpcpp/grpcpp.h"\n')
        write(root, "tests/server/f_test.cc", '#include "server/internal/t.h"\n#include "codec/internal/q.h"\n')
        write(root, "tests/bench/g.cc", '#include "codec/internal/dct.h"\n')
        errors = sorted(e.split(": ", 1)[0] for e in check_layering.check(root))
    want = sorted(["codec/b.cc:1", "codec/b.cc:2", "server/c.cc:1", "client/d.cc:1",
                   "storage/e.cc:1", "tests/server/f_test.cc:2"])
    if errors != want:
        print(f"FAIL: got {errors}, want {want}")
        return 1
    print(f"PASS: {len(want)} violations found as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
