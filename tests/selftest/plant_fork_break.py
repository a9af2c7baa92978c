"""A planted torch whose forked children cannot run a backward after the server's full warm-up,
as the 2.14.1 and 2.15.0 CUDA wheels behave (core/procs.py, WARMUPS): a pytest plugin (`-p`)
that makes the sandbox's forkserver import this module too. In a server started with
GRL_WARMUP=full, every child it forks gets a `Tensor.backward` that raises torch's own words.
Never used outside tests/selftest/test_sandbox.py.
"""
from __future__ import annotations

import os

MESSAGE = ("Unable to handle autograd's threading in combination with fork-based "
           "multiprocessing (planted by tests/selftest/plant_fork_break.py)")


def pytest_configure(config) -> None:
    from grl_conformance.core import procs

    if __name__ not in procs.PRELOAD:
        procs.PRELOAD.append(__name__)  # imported by the server: children inherit the break


def _break_children() -> None:
    import torch

    def backward(*args, **kwargs):
        raise RuntimeError(MESSAGE)

    def in_child() -> None:
        torch.Tensor.backward = backward
        torch.autograd.backward = backward

    os.register_at_fork(after_in_child=in_child)


if os.environ.get("GRL_WARMUP") == "full" and os.environ.get("GRL_PLANT_FORK_BREAK") == "1":
    _break_children()
