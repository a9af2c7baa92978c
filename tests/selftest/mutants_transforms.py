"""Mutants for the transform checks (harness/checks/transforms.py)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tests.selftest.grls import FloatAlphaLayer, FullReverse, Reverse
from tests.selftest.mutation import mutant


class _OldStyle(torch.autograd.Function):
    """forward(ctx, ...) without setup_context: correct in eager, refused by torch.func."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


class _ZeroJvp(Reverse):
    """vmap rule generated, but the jvp returns a zero tangent (as custom_op does)."""

    generate_vmap_rule = True

    @staticmethod
    def jvp(ctx, x_tangent, alpha_tangent):
        return torch.zeros_like(x_tangent)


class _OldStyleLayer(FloatAlphaLayer):
    def forward(self, x):
        return _OldStyle.apply(x, self.alpha)


class _ZeroJvpLayer(FloatAlphaLayer):
    def forward(self, x):
        return _ZeroJvp.apply(x, self.alpha)


class _HookLayer(FloatAlphaLayer):
    """Reverses through a tensor hook with a lambda: TorchScript cannot compile it."""

    def forward(self, x):
        y = x.view_as(x)
        if y.requires_grad:
            y.register_hook(lambda grad: grad * -self.alpha)
        return y


class _ScriptIdentity(nn.Module):
    """Falls back to the identity when scripted ('TorchScript-friendly'): the reversal is gone."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = float(alpha)

    def set_alpha(self, alpha: float):
        self.alpha = float(alpha)

    def forward(self, x):
        if torch.jit.is_scripting():
            return x
        return self._reverse(x)

    @torch.jit.unused
    def _reverse(self, x):
        return Reverse.apply(x, self.alpha)


# An op whose schema says it returns a fresh tensor while its kernel returns its input.
_LIB = torch.library.Library("grl_selftest_transforms", "DEF")
_LIB.define("grl_alias(Tensor x, float alpha) -> Tensor")
_LIB.impl("grl_alias", lambda x, alpha: x, "CompositeExplicitAutograd")
_LIB.impl("grl_alias", lambda x, alpha: torch.empty_like(x), "Meta")


def _alias_setup(ctx, inputs, output):
    ctx.alpha = inputs[1]


def _alias_backward(ctx, grad):
    return -ctx.alpha * grad, None


torch.library.register_autograd("grl_selftest_transforms::grl_alias", _alias_backward,
                                setup_context=_alias_setup)


class _SchemaLiesLayer(FloatAlphaLayer):
    def forward(self, x):
        return torch.ops.grl_selftest_transforms.grl_alias(x, self.alpha)


@torch.library.custom_op("grl_selftest_transforms::grl", mutates_args=())
def _grl(x: Tensor, alpha: Tensor) -> Tensor:
    return x.clone()


@_grl.register_fake
def _(x, alpha):
    return torch.empty_like(x)


def _grl_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _grl_backward(ctx, grad):
    (alpha,) = ctx.saved_tensors
    return -alpha.to(grad.dtype) * grad, None


_grl.register_autograd(_grl_backward, setup_context=_grl_setup)


class _CustomOpLayer(nn.Module):
    """A correct custom_op GRL with a 0-d tensor alpha buffer (the library_op pattern).

    torch.func's forward mode sees no jvp for it: the tangent comes out zero.
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def set_alpha(self, alpha):
        self.alpha.fill_(float(alpha))

    def forward(self, x):
        return _grl(x, self.alpha)


class _ReversalDroppedUnderFunctorch(FloatAlphaLayer):
    """Reverses for autograd, but a functorch-wrapped input takes a plain path with no reversal."""

    def forward(self, x):
        if torch._C._functorch.is_functorch_wrapped_tensor(x):
            return x * 1.0
        return Reverse.apply(x, self.alpha)


class _UnreversedWhenTracedLayer(FloatAlphaLayer):
    """Reverses in eager; under torch.jit.trace it takes a shortcut that forgets -alpha."""

    def forward(self, x):
        if torch.jit.is_tracing():
            return x * 1.0
        return Reverse.apply(x, self.alpha)


class _FxBlindLayer(FloatAlphaLayer):
    """Correct in eager; traced through by FX, its graph records `x * 1` (reversal lost)."""

    def forward(self, x):
        if isinstance(x, torch.fx.Proxy):
            return x * 1.0
        return Reverse.apply(x, self.alpha)


class _AlphaCachedForFunctorch(FloatAlphaLayer):
    """Right everywhere at the alpha it was built with; under a torch.func transform it reads a
    copy of alpha taken at construction, which set_alpha never updates."""

    def __init__(self, alpha=1.0):
        super().__init__(alpha)
        self.alpha_at_init = float(alpha)

    def forward(self, x):
        if torch._C._functorch.is_functorch_wrapped_tensor(x):
            return FullReverse.apply(x, self.alpha_at_init)
        return FullReverse.apply(x, self.alpha)


MUTANTS = [
    mutant("transforms_alpha_cached_for_functorch", _AlphaCachedForFunctorch,
           trips={"func.vmap": "fail", "func.grad": "fail", "func.jvp": "fail"},
           passes=("backward.reversal", "alpha.update"),
           why="under torch.func it uses the alpha it was built with: right until set_alpha, then "
               "frozen"),
    mutant("transforms_float_alpha", FloatAlphaLayer,
           trips={"jit.script": "fail", "jit.trace": "fail"},
           passes=("backward.reversal", "alpha.update"),
           why="the reference GRL's Python-float alpha: a scripted or traced module holds a copy "
               "(script) or a constant (trace), so set_alpha on the layer never reaches it"),
    mutant("trace_shortcut", _UnreversedWhenTracedLayer,
           trips={"jit.trace": "fail"},
           passes=("backward.reversal", "compile.aot_eager"),
           why="reverses in eager, but takes an unreversed shortcut under torch.jit.trace"),
    mutant("fx_blind", _FxBlindLayer,
           trips={"fx.trace": "fail"},
           passes=("backward.reversal", "compile.aot_eager"),
           why="an autograd.Function FX traces through as `x * 1`: the GraphModule loses the "
               "reversal, the real module keeps it"),
    mutant("transforms_functorch_unreversed", _ReversalDroppedUnderFunctorch,
           trips={"func.grad": "fail", "func.jvp": "fail"},
           why="torch.func sees an identity: grad equals the upstream weights, jvp tangent is t"),
    mutant("transforms_old_style_function", _OldStyleLayer,
           trips={"func.vmap": "error", "func.grad": "error", "func.jvp": "error"},
           why="an old-style autograd.Function (no setup_context) is refused by torch.func"),
    # the correct float-alpha GRL itself: setup_context style, no vmap rule and no jvp
    mutant("transforms_no_vmap_rule", FloatAlphaLayer,
           trips={"func.vmap": "error", "export": "fail"},
           passes=("func.grad",),
           why="no vmap staticmethod and no generate_vmap_rule; export drops the Function's backward"),
    mutant("transforms_zero_jvp", _ZeroJvpLayer,
           trips={"func.jvp": "fail"},
           passes=("func.vmap", "func.grad"),
           why="jvp returns a zero tangent while the backward reverses"),
    mutant("transforms_unscriptable_hook", _HookLayer,
           trips={"jit.script": "error", "func.vmap": "fail", "func.jvp": "fail"},
           passes=("func.grad",),
           why="a lambda tensor hook cannot be compiled by TorchScript; under vmap the hook sits on "
               "the batched tensor and never runs; forward mode never sees it"),
    mutant("transforms_script_identity", _ScriptIdentity,
           trips={"jit.script": "fail"},
           why="returns x unchanged when scripted: the scripted module silently loses the reversal"),
    mutant("transforms_schema_lies", _SchemaLiesLayer, kind="library",
           trips={"opcheck": "fail", "compile.fusion": "fail"},
           why="the op returns its input while its schema declares a fresh tensor; inductor, "
               "trusting the schema, computes a wrong gradient on sin -> op -> cos"),
    mutant("transforms_custom_op", _CustomOpLayer, kind="library",
           trips={"func.jvp": "fail"},
           passes=("opcheck", "export", "compile.aot_eager", "compile.alpha_schedule",
                   "compile.fusion"),
           why="a correct custom_op GRL: zero jvp tangent, opaque to inductor (+kernels)"),
]
