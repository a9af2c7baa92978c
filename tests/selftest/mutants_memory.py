"""Mutants for the eager memory checks (harness/checks/eager/memory.py): memory.saved,
memory.graph_freed, memory.offload. Each reverses right and costs memory a GRL need not."""
from __future__ import annotations

import torch

from tests.selftest.grls import FloatAlphaLayer, Reverse
from tests.selftest.mutants_reversal import function_grl
from tests.selftest.mutation import mutant

_SavesInput = function_grl("SavesInput", setup=lambda ctx, x, a: ctx.save_for_backward(x))
_KeepsInputOnCtx = function_grl("KeepsInputOnCtx", setup=lambda ctx, x, a: setattr(ctx, "x", x))


class _OutputOnCtx(Reverse):
    """Right gradient, but keeps its output on ctx: output -> grad_fn -> ctx -> output, a cycle
    only the garbage collector frees (PyTorch's docs warn against it)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        Reverse.setup_context(ctx, inputs, output)
        ctx.out = output


class _OutputOnCtxLayer(FloatAlphaLayer):
    def forward(self, x):
        return _OutputOnCtx.apply(x, float(self.alpha))


class _SavedAlpha(Reverse):
    """Right in eager; saves alpha as a tensor through save_for_backward, where a saved-tensor
    hook (offloading, compression) can hand back a different value."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(torch.tensor(inputs[1], dtype=torch.float64))

    @staticmethod
    def backward(ctx, grad):
        (alpha,) = ctx.saved_tensors
        return grad * -alpha.item(), None


class _SavedAlphaLayer(FloatAlphaLayer):
    def forward(self, x):
        return _SavedAlpha.apply(x, float(self.alpha))


MUTANTS = [
    mutant("alpha_saved_for_backward", _SavedAlphaLayer,
           trips={"memory.offload": "fail"},
           passes=("backward.reversal", "memory.saved", "alpha.update"),
           why="alpha through save_for_backward: a compressing saved-tensor hook rounds it"),
    mutant("output_on_ctx", _OutputOnCtxLayer,
           trips={"memory.graph_freed": "fail"},
           passes=("backward.reversal", "alpha.update", "graph.several_grls"),
           why="keeps its output on ctx: every step's graph lives until gc runs"),
    mutant("eager_saves_input", _SavesInput, trips={"memory.saved": "fail"},
           why="saves its input for backward",
           passes=("backward.reversal", "backward.double", "alpha.update")),
    mutant("eager_keeps_input_on_ctx", _KeepsInputOnCtx, trips={"memory.saved": "fail"},
           why="keeps its input as ctx.x, which saved_tensors_hooks never sees",
           passes=("backward.reversal", "alpha.update")),
]
