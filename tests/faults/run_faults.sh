#!/bin/sh
# Bounded loopback fault injection (disk full, EMFILE, kill -9) against a loaded
# deltaserved; prints rounds, failures and recovery times. Not part of ctest (about a
# minute per 3 rounds). Usage: tests/faults/run_faults.sh [--rounds N] [--wal-tasks N]
exec /usr/bin/python3 "$(dirname "$0")/run_faults.py" "$@"
