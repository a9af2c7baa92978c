"""A pytest plugin for self-tests: which xdist worker ran each conformance cell.

Loaded with `-p tests.selftest.worker_recorder`; appends `<worker> <nodeid>` to the file named by
GRL_SELFTEST_WORKERS. The worker id comes from xdist's `workerinput`, not the environment (a
self-test running under xdist passes its own PYTEST_XDIST_WORKER to the run it starts).
"""
from __future__ import annotations

import os


def pytest_runtest_setup(item):
    path = os.environ.get("GRL_SELFTEST_WORKERS")
    worker = getattr(item.config, "workerinput", {}).get("workerid")
    if path and worker:
        with open(path, "a") as fh:
            fh.write(f"{worker} {item.nodeid}\n")
