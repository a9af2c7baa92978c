"""Mutants for the eager reversal checks (harness/checks/eager/reversal.py).

Each is a small GRL with one realistic defect. `trips` names the check that must catch it;
`passes` names checks it must still pass, proving that those checks do not false-alarm and
that each column answers its own question.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from tests.selftest.grls import FloatAlphaLayer
from tests.selftest.mutation import mutant


class _ForwardScaled(nn.Module):
    """Forward multiplies by 1 + 1e-3: not the identity."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def set_alpha(self, alpha):
        self.alpha = alpha

    def forward(self, x):
        return x * (1 + 1e-3)


def function_grl(name, *, forward=None, backward=None, setup=None, neg_alpha=None, materialize=True):
    """A GRL as an autograd.Function plus a module holding alpha as a Python float.

    forward(x) -> y (default: a view); backward(ctx, grad) -> grad_in (default: grad * -alpha);
    setup(ctx, x, alpha) runs in setup_context; neg_alpha(alpha) is what backward multiplies by.
    """

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(x, alpha):
            return forward(x) if forward else x.view_as(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, alpha = inputs
            ctx.alpha = alpha
            ctx.neg_alpha = neg_alpha(alpha) if neg_alpha else -alpha
            ctx.set_materialize_grads(materialize)
            if setup:
                setup(ctx, x, alpha)

        @staticmethod
        def backward(ctx, grad):
            return (backward(ctx, grad) if backward else grad * ctx.neg_alpha), None

    class Layer(FloatAlphaLayer):
        def forward(self, x):
            return Fn.apply(x, self.alpha)

    Fn.__name__ = Fn.__qualname__ = f"{name}Function"
    Layer.__name__ = Layer.__qualname__ = f"{name}Layer"
    return Layer


# --- forward ---------------------------------------------------------------------------------

_PlusZero = function_grl("PlusZero", forward=lambda x: x + 0.0)


class _DetachTrick(FloatAlphaLayer):
    """The arithmetic GRL `(1 + a) * x.detach() - a * x`: right gradient, but inf - inf = nan."""

    def forward(self, x):
        return (1 + self.alpha) * x.detach() - self.alpha * x


# --- backward values -------------------------------------------------------------------------

_WrongSign = function_grl("WrongSign", neg_alpha=lambda a: a)
_AlphaIgnored = function_grl("AlphaIgnored", neg_alpha=lambda a: -1.0)
_AlphaBFloat16 = function_grl("AlphaBFloat16", neg_alpha=lambda a: torch.tensor(-a, dtype=torch.bfloat16))
_AlphaFloat32 = function_grl("AlphaFloat32", neg_alpha=lambda a: torch.tensor(-a, dtype=torch.float32))
_NanSwallowed = function_grl("NanSwallowed", backward=lambda ctx, g: torch.nan_to_num(g * ctx.neg_alpha))
# autograd casts a Function's gradient back to the input's dtype silently: what is left of
# "returns float32" is float32 rounding on a float64 input
_GradFloat32 = function_grl("GradFloat32", backward=lambda ctx, g: (g * ctx.neg_alpha).float())


def _nan_guard(ctx, g):
    if not torch.isfinite(g.abs().max()):  # a debugging guard: max() of an empty tensor raises
        warnings.warn("non-finite gradient in GRL", stacklevel=2)
    return g * ctx.neg_alpha


_EmptyBreaks = function_grl("EmptyBreaks", backward=_nan_guard)
_GradView = function_grl("GradView", backward=lambda ctx, g: (g.view(-1) * ctx.neg_alpha).view(g.shape))


def _none_unaware(ctx, g):
    return g * ctx.neg_alpha  # g is None for an undefined gradient when grads are not materialized


_UndefinedGrad = function_grl("UndefinedGrad", backward=_none_unaware, materialize=False)


def _unrelated_failure(ctx, g):
    raise RuntimeError("GRL backward failed")  # an ordinary error: must never read as a pass


_BackwardRaises = function_grl("BackwardRaises", forward=lambda x: x.clone(), backward=_unrelated_failure)


# --- double backward ----------------------------------------------------------------------

def _detached(ctx, g):
    with torch.no_grad():
        return g * ctx.neg_alpha


_NoDoubleBackward = function_grl("NoDoubleBackward", backward=_detached)
_SanitisesInput = function_grl("SanitisesInput", forward=lambda x: x.nan_to_num_().view_as(x))


# --- alpha handling --------------------------------------------------------------------------

class _SetAlphaNoop(function_grl("SetAlphaNoop")):
    """set_alpha stores the new value where forward never looks."""

    def set_alpha(self, alpha):
        self._alpha = float(alpha)


class _StaleStateAlpha(nn.Module):
    """alpha is a buffer (in state_dict) but forward uses a float cached by __init__/set_alpha,
    so load_state_dict changes the buffer and not the behaviour."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float64))
        self._cached = float(alpha)
        self._impl = function_grl("StaleInner")()

    def set_alpha(self, alpha):
        self.alpha.fill_(float(alpha))
        self._cached = float(alpha)

    def forward(self, x):
        self._impl.set_alpha(self._cached)
        return self._impl(x)


# --- graph structure -------------------------------------------------------------------------

class _InputHook(FloatAlphaLayer):
    """Reverses by a hook on the layer's INPUT: every branch that uses the input is reversed."""

    def forward(self, x):
        if x.requires_grad:
            a = self.alpha
            x.register_hook(lambda g: g * -a)
        return x.view_as(x)


# --- never reverses ---------------------------------------------------------------------------

class _ModuleBackward(FloatAlphaLayer):
    """A pattern published as a GRL: an nn.Module that defines `backward`. Autograd only calls
    the backward of an autograd.Function, never a module's, so this forward is a plain identity
    and nothing is ever reversed. Every check that runs a backward must fail it
    (tests/selftest/test_never_reverses.py)."""

    def forward(self, x):
        return x.view_as(x)

    def backward(self, grad_output):
        return grad_output * -self.alpha


NEVER_REVERSES = "never_reverses"


MUTANTS = [
    mutant(NEVER_REVERSES, _ModuleBackward, trips={"backward.reversal": "fail"},
           why="an nn.Module's backward method is never called by autograd: no reversal at all",
           passes=("forward.identity", "memory.saved")),
    mutant("forward_scaled", _ForwardScaled, trips={"forward.identity": "fail"},
           why="forward is not the identity"),
    mutant("eager_forward_plus_zero", _PlusZero, trips={"forward.identity": "fail"},
           why="forward x + 0.0 turns -0.0 into +0.0",
           passes=("backward.reversal", "memory.saved", "inplace.after")),
    mutant("eager_detach_trick", _DetachTrick, trips={"forward.identity": "fail"},
           why="(1 + a) x.detach() - a x: inf - inf gives nan in forward",
           passes=("backward.reversal", "backward.gradcheck", "alpha.update", "memory.saved")),
    mutant("eager_wrong_sign", _WrongSign,
           trips={"backward.reversal": "fail", "backward.gradcheck": "fail", "backward.double": "fail"},
           why="backward multiplies by +alpha",
           passes=("forward.identity", "memory.saved", "inplace.after")),
    mutant("eager_alpha_ignored", _AlphaIgnored,
           trips={"backward.reversal": "fail", "alpha.update": "fail"},
           why="backward always multiplies by -1", passes=("forward.identity", "memory.saved")),
    mutant("eager_alpha_bfloat16", _AlphaBFloat16, trips={"backward.reversal": "fail"},
           why="alpha rounded to bfloat16",
           passes=("alpha.update", "graph.shared_trunk", "backward.double", "memory.saved")),
    mutant("eager_alpha_float32", _AlphaFloat32, trips={"backward.reversal": "fail"},
           why="alpha rounded to float32: only a float64 input notices",
           passes=("backward.gradcheck", "backward.double", "alpha.update", "graph.shared_trunk")),
    mutant("eager_nan_swallowed", _NanSwallowed, trips={"backward.reversal": "fail"},
           why="nan_to_num in backward hides nan/inf upstream gradients",
           passes=("backward.gradcheck", "backward.double", "alpha.update", "graph.shared_trunk")),
    mutant("eager_grad_float32", _GradFloat32, trips={"backward.reversal": "fail"},
           why="backward returns a float32 gradient (autograd casts it back, the rounding stays)",
           passes=("alpha.update", "graph.shared_trunk")),
    mutant("eager_empty_breaks", _EmptyBreaks, trips={"backward.reversal": "error"},
           why="backward reduces the gradient with max(), which raises on zero elements",
           passes=("forward.identity", "backward.gradcheck", "alpha.update", "graph.shared_trunk")),
    mutant("eager_grad_view", _GradView, trips={"backward.reversal": "error"},
           why="backward uses .view on the gradient, which raises when it is not contiguous",
           passes=("backward.gradcheck", "alpha.update", "graph.shared_trunk")),
    mutant("eager_backward_raises", _BackwardRaises,
           trips={"inplace.after": "error", "backward.reversal": "error", "graph.shared_trunk": "error"},
           why="backward raises an unrelated RuntimeError: inplace.after's accepted 'clear error' "
               "is autograd's in-place refusal only", passes=("forward.identity", "memory.saved")),
    mutant("eager_undefined_grad", _UndefinedGrad, trips={"backward.gradcheck": "error"},
           why="grads not materialized and backward raises on None (check_undefined_grad)",
           passes=("backward.reversal", "alpha.update")),
    mutant("eager_no_double_backward", _NoDoubleBackward, trips={"backward.double": "fail"},
           why="backward computed under no_grad: the second derivative is lost",
           passes=("backward.reversal", "backward.gradcheck")),
    mutant("eager_sanitises_input", _SanitisesInput, trips={"forward.identity": "fail"},
           why="replaces nan/inf in its input in place: output and input agree, both are wrong"),
    mutant("eager_set_alpha_noop", _SetAlphaNoop,
           trips={"alpha.update": "fail", "backward.reversal": "fail"},
           why="set_alpha has no effect", passes=("forward.identity", "memory.saved")),
    mutant("eager_stale_state_alpha", _StaleStateAlpha, trips={"alpha.update": "fail"},
           why="alpha buffer is in state_dict but forward uses a cached float",
           passes=("backward.reversal", "graph.shared_trunk")),
    mutant("eager_input_hook", _InputHook, trips={"graph.shared_trunk": "fail"},
           why="hook on the layer's input reverses the task branch too",
           passes=("forward.identity", "backward.reversal", "memory.saved")),
]
