"""Mutants for the distributed checks (harness/checks/distributed.py).

Each is correct in a single process (eager checks pass) and breaks only across ranks. Child
processes rebuild them by name through `tests.selftest.mutation:NAME`.
"""
from __future__ import annotations

import time

import torch.distributed as dist
from torch import nn

from tests.selftest.grls import FloatAlphaLayer, Reverse
from tests.selftest.mutation import mutant


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


_SCHEDULE = {"alpha": 1.0}


class _RankZeroGlobalAlpha(nn.Module):
    """Alpha lives in a process-global that set_alpha writes on rank 0 only (a `rank_zero_only`
    scheduler callback): a single process is right, the other ranks keep the first alpha."""

    def __init__(self, alpha=1.0):
        super().__init__()
        _SCHEDULE["alpha"] = float(alpha)

    def set_alpha(self, alpha):
        if _rank() == 0:
            _SCHEDULE["alpha"] = float(alpha)

    def forward(self, x):
        return Reverse.apply(x, _SCHEDULE["alpha"])


class _HangOnRank1(FloatAlphaLayer):
    """Forward blocks forever on rank 1 only: rank 0 waits in the gradient all-reduce."""

    def forward(self, x):
        if _rank() == 1:
            while True:
                time.sleep(3600)
        return Reverse.apply(x, self.alpha)


class _RaiseOnRank1(_HangOnRank1):
    """Forward raises on rank 1 only."""

    def forward(self, x):
        if _rank() == 1:
            raise RuntimeError("deliberate failure on rank 1")
        return Reverse.apply(x, self.alpha)


DIST = ("ddp.eager", "ddp.compiled", "fsdp")

MUTANTS = [
    mutant("dist_rank_local_alpha", _RankZeroGlobalAlpha, trips={c: "fail" for c in DIST},
           why="set_alpha reaches rank 0 only; rank 1 trains with the first alpha",
           passes=("forward.identity",)),
]

# Run by tests/selftest/test_distributed_launch.py with a short GRL_DIST_TIMEOUT, not by the
# generic mutant test (a hang would cost the default timeout there).
EXTRA_MUTANTS = [
    mutant("dist_hang_rank1", _HangOnRank1, trips={"ddp.eager": "error"},
           why="forward blocks on rank 1: the cell must time out and leave no process behind"),
    mutant("dist_raise_rank1", _RaiseOnRank1, trips={"ddp.eager": "error"},
           why="forward raises on rank 1: the child's traceback must reach the detail"),
]
