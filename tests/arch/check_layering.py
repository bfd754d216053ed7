#!/usr/bin/env python3
"""Checks the architecture STYLE.md describes, on every #include of the source tree.

1. Dependencies point one way: a folder includes only the project folders it may depend
   on (ALLOWED) and none of the third-party headers it must know nothing of (FORBIDDEN).
2. A folder's `internal/` headers are included only from that folder and its tests
   (tests/<folder>/; benchmarks in tests/bench/ may use codec internals).
Prints each violation as `file:line: message` and exits 1 if there is any.
Usage: check_layering.py [REPO_ROOT]
"""
import os
import re
import sys

LIBS = ("common", "codec", "storage", "cluster", "proto", "server", "client", "python")
ALLOWED = {
    "common": set(),
    "codec": {"common"},
    "storage": {"common", "codec"},
    "cluster": {"common", "codec", "storage"},
    "proto": {"common", "codec"},
    "server": {"common", "codec", "storage", "cluster", "proto"},
    "client": {"common", "codec", "proto"},
    # the pybind11 modules (python/codec): the codec, and the C++ client for the pull
    "python": {"common", "codec", "proto", "client"},
}
# Generated proto headers are included as "deltaserve/v1/...".
PROTO_PREFIX = "deltaserve/"
FORBIDDEN = {
    "common": ("rocksdb/", "grpcpp/", "grpc/", "google/protobuf/", "prometheus/"),
    "codec": ("rocksdb/", "grpcpp/", "grpc/", "google/protobuf/", "prometheus/"),
    "storage": ("grpcpp/", "grpc/", "google/protobuf/", "prometheus/"),
    "cluster": ("rocksdb/", "grpcpp/", "grpc/", "google/protobuf/", "prometheus/"),
    "client": ("rocksdb/", "prometheus/"),
    "python": ("rocksdb/", "grpcpp/", "grpc/", "google/protobuf/", "prometheus/"),
}
# Which tests/<dir> may include which folders' internal/ headers.
TEST_INTERNALS = {"bench": {"codec"}}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]')


def target_folder(path):
    if path.startswith(PROTO_PREFIX):
        return "proto"
    top = path.split("/", 1)[0]
    return top if top in LIBS else None


def check(root):
    errors = []
    for top in LIBS + ("tests",):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in files:
                if not name.endswith((".h", ".cc", ".cpp")):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                parts = rel.split(os.sep)
                with open(full, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        inc = m.group(1)
                        errors += check_include(parts, inc, f"{rel}:{lineno}")
    return errors


def check_include(parts, inc, where):
    errs = []
    dep = target_folder(inc)
    if parts[0] == "tests":
        test_dir = parts[1] if len(parts) > 2 else ""
        if dep and "/internal/" in inc and dep != test_dir and \
                dep not in TEST_INTERNALS.get(test_dir, set()):
            errs.append(f"{where}: tests/{test_dir} includes {inc}, internal to {dep}/")
        return errs
    folder = parts[0]
    if dep and dep != folder:
        if dep not in ALLOWED[folder]:
            errs.append(f"{where}: {folder}/ may not depend on {dep}/ ({inc})")
        elif "/internal/" in inc:
            errs.append(f"{where}: {inc} is internal to {dep}/")
    for prefix in FORBIDDEN.get(folder, ()):
        if inc.startswith(prefix):
            errs.append(f"{where}: {folder}/ must know nothing of {prefix} ({inc})")
    return errs


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    errors = check(os.path.abspath(root))
    for e in errors:
        print(e)
    print(f"layering: {len(errors)} violation(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
