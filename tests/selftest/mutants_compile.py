"""Mutants for the compile checks (harness/checks/compile.py)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from grl_conformance.impls import library_op
from tests.selftest.grls import FloatAlphaLayer, FullReverse, Reverse
from tests.selftest.mutation import mutant


class _GraphBreak(nn.Module):
    """Validates its tensor alpha in forward (`if self.alpha < 0`): a data-dependent branch,
    which dynamo cannot trace (a graph break; an error under fullgraph).

    Measured on torch 2.13.0: `float(buffer)` / `.item()` no longer graph-break here (dynamo
    traces them into the Function's argument and stays correct after `fill_`), so the mutant
    uses the Python branch on a tensor that still does.
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def set_alpha(self, alpha):
        self.alpha.fill_(float(alpha))

    def forward(self, x):
        if self.alpha < 0:
            raise ValueError("alpha must be non-negative")
        return Reverse.apply(x, self.alpha)


_ALPHAS: dict[int, float] = {}


@torch._dynamo.assume_constant_result
def _frozen_alpha(key: int) -> float:
    return _ALPHAS[key]


class _GuardlessAlpha(nn.Module):
    """Alpha read through `assume_constant_result`: dynamo bakes the first value in, no guard.

    Eager is right at every alpha; a compiled graph keeps using the alpha it was traced with
    (as a layer that caches its coefficient where the compiler cannot see it does).
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        _ALPHAS[id(self)] = float(alpha)

    def set_alpha(self, alpha):
        _ALPHAS[id(self)] = float(alpha)

    def forward(self, x):
        return Reverse.apply(x, _frozen_alpha(id(self)))


class _PerBatch(nn.Module):
    """Loops over the batch dimension in Python: dynamo specializes on every batch size."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def set_alpha(self, alpha):
        self.alpha.fill_(float(alpha))

    def forward(self, x):
        rows = 0
        for _ in range(x.shape[0]):
            rows += 1
        return Reverse.apply(x, self.alpha * (rows // x.shape[0]))


@torch.library.custom_op("grl_selftest_compile::grl_float", mutates_args=())
def _grl_float(x: Tensor, alpha: float) -> Tensor:
    return x.clone()


@_grl_float.register_fake
def _(x, alpha):
    return torch.empty_like(x)


def _float_setup(ctx, inputs, output):
    ctx.alpha = inputs[1]


def _float_backward(ctx, grad):
    return -ctx.alpha * grad, None


_grl_float.register_autograd(_float_backward, setup_context=_float_setup)


class _CustomOpFloatAlpha(FloatAlphaLayer):
    """A custom op taking alpha as a Python float: dynamo recompiles for every distinct value,
    and being opaque to inductor it costs a kernel of its own plus its clone."""

    def forward(self, x):
        return _grl_float(x, self.alpha)


class _ReversalDroppedWhenCompiled(FloatAlphaLayer):
    """Reverses in eager, but the traced branch forgets the reversal: a compiled model trains
    its features the wrong way while every eager test passes."""

    def forward(self, x):
        if torch.compiler.is_compiling():
            return x.view_as(x)
        return Reverse.apply(x, self.alpha)


class _PlainFunctionLayer(FloatAlphaLayer):
    """The textbook correct Function GRL (setup_context, so torch.func accepts it): right in
    eager and in eager torch.func.grad; compiled torch.func.grad drops its backward (torch
    2.13, pytorch/pytorch#193279-style silent correctness)."""


class _UnreversedWhenBackwardCompiled(Reverse):
    """Right in eager; when compiled autograd traces its backward, it takes a shortcut that
    forgets -alpha (a module flag read at trace time)."""

    @staticmethod
    def backward(ctx, grad):
        from torch._dynamo import compiled_autograd

        if compiled_autograd.in_compiled_autograd_region:
            return grad, None
        return -ctx.alpha * grad, None


class _CompiledBackwardShortcutLayer(FloatAlphaLayer):
    def forward(self, x):
        return _UnreversedWhenBackwardCompiled.apply(x, float(self.alpha))


class _ShortcutWhenCompiledLayer(FloatAlphaLayer):
    """Right in eager and eager torch.func; under dynamo it takes an unreversed shortcut."""

    def forward(self, x):
        if torch.compiler.is_compiling():
            return x * 1.0
        return FullReverse.apply(x, float(self.alpha))


class _GuardlessComposite(_GuardlessAlpha):
    """The detach composite `d + (x - d) * -alpha` (torch.func and compile both keep its
    derivative) with alpha read through `assume_constant_result`: right in eager and under
    compiled torch.func until `set_alpha`, then the compiled graph keeps the old alpha."""

    def forward(self, x):
        d = x.detach()
        return d + (x - d) * -_frozen_alpha(id(self))


@torch._dynamo.assume_constant_result
def _saved_tensor_hooks_active() -> bool:
    return torch._C._autograd._top_saved_tensors_default_hooks(True) is not None


class _UnreversedUnderHooksWhenCompiled(FloatAlphaLayer):
    """Right in eager, with or without saved-tensor hooks, and compiled without them; a graph
    traced while hooks are active forgets the reversal (the shape of the torch bugs where hooks
    went wrong under compile, pytorch/pytorch#113263, #116221)."""

    def forward(self, x):
        if torch.compiler.is_compiling() and _saved_tensor_hooks_active():
            return x.view_as(x)
        return Reverse.apply(x, self.alpha)


MUTANTS = [
    mutant("compiled_func_shortcut", _ShortcutWhenCompiledLayer,
           trips={"compile.func_jvp": "fail", "compile.func_grad": "fail"},
           passes=("backward.reversal", "func.grad", "func.jvp"),
           why="right in eager torch.func; compiled, it forgets the reversal"),
    mutant("compiled_backward_shortcut", _CompiledBackwardShortcutLayer,
           trips={"compile.compiled_autograd": "fail"},
           passes=("backward.reversal", "compile.eager", "compile.aot_eager"),
           why="forgets -alpha only when compiled autograd traces its backward"),
    mutant("function_under_compiled_func", _PlainFunctionLayer,
           trips={"compile.func_grad": "fail"},
           passes=("backward.reversal", "func.grad", "compile.aot_eager"),
           why="a correct Function GRL: torch.compile(torch.func.grad(...)) silently loses its "
               "reversal (a torch bug the column exists to show)"),
    mutant("compile_reversal_dropped", _ReversalDroppedWhenCompiled,
           trips={"compile.eager": "fail", "compile.aot_eager": "fail", "compile.inductor": "fail",
                  "compile.alpha_schedule": "fail"},
           why="the compiled graph has no reversal: outputs equal, gradients of opposite sign"),
    mutant("compile_graph_break", _GraphBreak,
           trips={"compile.eager": "error", "compile.aot_eager": "error", "compile.inductor": "error"},
           why="a Python branch on the alpha tensor graph-breaks; fullgraph must not pass"),
    mutant("compile_guardless_alpha", _GuardlessAlpha,
           trips={"compile.alpha_schedule": "fail", "compile.eager": "fail",
                  "compile.aot_eager": "fail", "compile.inductor": "fail"},
           passes=("backward.reversal", "compile.dynamic_shapes"),
           why="alpha baked into the compiled graph without a guard: right until set_alpha, then "
               "the compiled model keeps the old alpha (alpha frozen)"),
    mutant("compile_guardless_composite", _GuardlessComposite,
           trips={"compile.func_grad": "fail", "compile.func_jvp": "fail"},
           passes=("backward.reversal", "func.grad", "func.jvp"),
           why="a composite GRL whose alpha dynamo bakes in: compiled torch.func is right until "
               "set_alpha, then keeps the old alpha (alpha frozen)"),
    mutant("compile_per_batch_recompile", _PerBatch,
           trips={"compile.dynamic_shapes": "fail"},
           passes=("compile.aot_eager",),
           why="a Python loop over the batch dimension recompiles for every batch size"),
    mutant("compile_custom_op_float_alpha", _CustomOpFloatAlpha, kind="library",
           trips={"compile.alpha_schedule": "error", "export": "fail", "fx.trace": "fail",
                  "jit.trace": "fail"},
           passes=("compile.eager", "opcheck"),
           why="a float alpha argument of a custom op recompiles per value (hits the limit); "
               "export, FX and tracing record the float as a constant (alpha frozen); the opaque "
               "op adds kernels (a cost the fusion cell reports, not a failure)"),
    mutant("compile_alpha_saved_when_compiled", library_op.GradientReversalLayer, kind="library",
           trips={}, passes=("memory.offload", "compile.offload", "compile.aot_eager"),
           why="not a mutant: the library_op row, a custom op keeping its alpha tensor on ctx; "
               "compiled, AOTAutograd saves alpha and a compressing hook rounds it to bfloat16, "
               "the partitioner's choice, within the column's tolerance, never a fail"),
    mutant("compile_unreversed_under_hooks", _UnreversedUnderHooksWhenCompiled,
           trips={"compile.offload": "fail"},
           passes=("backward.reversal", "memory.offload", "compile.aot_eager"),
           why="a graph compiled while saved-tensor hooks are active has no reversal"),
]
