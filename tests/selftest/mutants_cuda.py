"""Mutants for the CUDA-graph checks (harness/checks/cuda.py).

All are correct in eager mode and break only under capture, so their trips need a GPU
(`requires=("cuda",)`): on a CPU machine test_mutants.py asserts the cells are `skip` with a
reason instead. What each trips on CUDA is written from reading PyTorch, not yet run on a GPU.
"""
from __future__ import annotations

import torch

from tests.selftest.grls import FloatAlphaLayer, Reverse
from tests.selftest.mutation import mutant

# The correct float-alpha GRL: alpha is a Python float handed to the kernel, so capture bakes
# it into the graph.
_PythonFloatAlpha = FloatAlphaLayer


class _HostSync(_PythonFloatAlpha):
    """Forward checks its input for NaN on the host (`bool(tensor)` syncs): capture breaks."""

    def forward(self, x):
        if bool(torch.isnan(x).any()):
            raise ValueError("nan in GRL input")
        return Reverse.apply(x, self.alpha)


_CALLS = None  # created with the first layer, so importing this file initialises no CUDA


class _CountsCallsInGlobal(_PythonFloatAlpha):
    """Counts its calls in a module-level CUDA tensor updated in place (for a schedule or a
    log). Dynamo lifts a global tensor as a graph input that is not static (tensor attributes
    of a module would be), and cudagraph trees skip a graph that mutates such an input
    ("mutated inputs")."""

    def __init__(self, alpha=1.0):
        super().__init__(alpha)
        global _CALLS
        if _CALLS is None:
            _CALLS = torch.zeros((), device="cuda" if torch.cuda.is_available() else "cpu")

    def forward(self, x):
        _CALLS.add_(1)
        return Reverse.apply(x, self.alpha)


CUDA = ("cuda",)

class _ReversalDroppedWhileCapturing(_PythonFloatAlpha):
    """Reverses in eager, but skips the reversal while a CUDA graph is being captured."""

    def forward(self, x):
        if torch.cuda.is_current_stream_capturing():
            return x.view_as(x)
        return Reverse.apply(x, self.alpha)


MUTANTS = [
    mutant("cuda_alpha_frozen", _PythonFloatAlpha, trips={"cuda.alpha_after_capture": "fail"},
           why="a Python-float alpha is frozen into the captured backward", requires=CUDA,
           passes=("cuda.graph",)),
    mutant("cuda_host_sync", _HostSync,
           trips={"cuda.graph": "error", "cuda.graphed_callables": "error"},
           why="a host sync in forward cannot be captured", requires=CUDA),
    mutant("cuda_reversal_dropped_in_capture", _ReversalDroppedWhileCapturing,
           trips={"cuda.graph": "fail", "cuda.graphed_callables": "fail"},
           why="the captured graph has no reversal: replays give unreversed gradients", requires=CUDA),
    mutant("cuda_global_counter", _CountsCallsInGlobal, trips={"cuda.reduce_overhead": "fail"},
           why="an in-place update of a global tensor makes reduce-overhead skip CUDA graphs",
           requires=CUDA),
]
