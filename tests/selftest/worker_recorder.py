"""A pytest plugin for self-tests: which xdist worker ran each conformance cell.

Loaded with `-p tests.selftest.worker_recorder`; appends `<worker> <nodeid>` to the file named by
GRL_SELFTEST_WORKERS.
"""
from __future__ import annotations

import os


def pytest_runtest_logstart(nodeid, location):
    path = os.environ.get("GRL_SELFTEST_WORKERS")
    if path and os.environ.get("PYTEST_XDIST_WORKER"):
        with open(path, "a") as fh:
            fh.write(f"{os.environ['PYTEST_XDIST_WORKER']} {nodeid}\n")
