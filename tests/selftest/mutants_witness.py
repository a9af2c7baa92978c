"""Twins of the witness row (impls/witness.py), each with exactly one of its mechanisms broken.

The witness picks its mechanism per context: `_ReverseFast` (eager outside torch.func),
`_Reverse` (inside torch.func), `_ReverseTraced` (under dynamo), the composite (export and
TorchScript). Each twin is the witness with one
piece swapped for a version that forgets the reversal, and must `fail` the column that goes
through that piece while the columns that go through the others still pass: that proves each
column really exercises the path the witness's docstring says it does (a column that silently
ran another path would pass the twin).
"""
from __future__ import annotations

import torch
from torch import Tensor

from grl_conformance.impls import witness
from tests.selftest.mutation import mutant


class _FastUnreversed(witness._ReverseFast):
    """The plain-eager Function's backward forgot -alpha."""

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _EagerUnreversed(witness._Reverse):
    """The torch.func Function's backward forgot -alpha (its jvp is still right)."""

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _TracedUnreversed(witness._ReverseTraced):
    """The Function dynamo traces forgot -alpha in backward."""

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _JvpUnreversed(witness._Reverse):
    """The eager Function's forward-mode rule forgot -alpha (backward still right)."""

    @staticmethod
    def jvp(ctx, x_tangent, alpha_tangent):
        return x_tangent.view_as(x_tangent)


class _FastTwin(witness.GradientReversalLayer):
    fast_function = _FastUnreversed


class _EagerTwin(witness.GradientReversalLayer):
    eager_function = _EagerUnreversed


class _TracedTwin(witness.GradientReversalLayer):
    traced_function = _TracedUnreversed


class _JvpTwin(witness.GradientReversalLayer):
    eager_function = _JvpUnreversed


class _CompositeTwin(witness.GradientReversalLayer):
    """The export/TorchScript composite with the sign forgotten: gradient +alpha."""

    def _scripted(self, x: Tensor) -> Tensor:
        d = x.detach()
        return d + torch.nan_to_num(x - d, nan=0.0, posinf=0.0, neginf=0.0) * -self.neg_alpha


MUTANTS = [
    mutant("witness_fast_twin", _FastTwin,
           trips={"backward.reversal": "fail", "amp.autocast": "fail"},
           passes=("forward.identity", "memory.saved", "func.grad", "func.vmap", "func.jvp"),
           why="the witness with its plain-eager Function's backward unreversed: eager autograd "
               "goes through it, no torch.func transform does"),
    mutant("witness_eager_twin", _EagerTwin,
           trips={"func.grad": "fail", "func.vmap": "fail"},
           passes=("forward.identity", "backward.reversal", "memory.saved", "func.jvp"),
           why="the witness with its torch.func Function's backward unreversed: torch.func.grad "
               "and vmap go through it; plain eager and forward mode (its jvp) do not"),
    mutant("witness_traced_twin", _TracedTwin,
           trips={"compile.eager": "fail", "compile.aot_eager": "fail", "compile.inductor": "fail",
                  "compile.alpha_schedule": "fail", "compile.fusion": "fail",
                  "compile.compiled_autograd": "fail", "compile.offload": "fail"},
           passes=("backward.reversal", "export", "jit.script", "func.grad", "func.jvp"),
           why="the witness with the Function dynamo traces unreversed: every compiled column "
               "goes through it, no eager or export/script column does"),
    mutant("witness_composite_twin", _CompositeTwin,
           trips={"export": "fail", "jit.script": "fail"},
           passes=("backward.reversal", "compile.aot_eager", "func.grad", "func.jvp"),
           why="the witness with its export/TorchScript composite reversing with +alpha: "
               "torch.export (non-strict, the default) and torch.jit.script take it, nothing else"),
    mutant("witness_jvp_twin", _JvpTwin,
           trips={"func.jvp": "fail"},
           passes=("backward.reversal", "func.vmap", "func.grad", "compile.aot_eager", "export"),
           why="the witness with an unreversed jvp: only forward mode reads it"),
]
