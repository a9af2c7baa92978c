"""The harness's own trusted GRL: the truth the checks judge an implementation against.

A check never trusts the implementation under test to say what the right answer is (its own
eager run may be just as wrong as its compiled one). Where the expected gradient is not written
out analytically, a check runs the same model with this GRL in the GRL's place, in eager mode.

Kept minimal so it is obviously right: the forward returns a view of its input, the backward
multiplies the incoming gradient by `-alpha` once. Two plainer forms serve as controls where a
column cannot run an autograd.Function (`CompositeGRL`) or needs a registered op
(`LibraryOpGRL`). Alpha may be a Python float, or a tensor
that broadcasts against the gradient (one alpha per batch row in the distributed reference).
"""
from __future__ import annotations

import functools

import torch
from torch import nn


class Reverse(torch.autograd.Function):
    """forward: identity (a view); backward: `grad * -alpha`, nothing saved but alpha."""

    @staticmethod
    def forward(x, alpha):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.alpha = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return grad * -ctx.alpha, None


class ReferenceGRL(nn.Module):
    """The seed API (`ReferenceGRL(alpha)`, `set_alpha`) with alpha a Python float, or a
    tensor that broadcasts against the gradient (one alpha per batch row: the distributed
    checks' truth for ranks that hold different alphas)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def set_alpha(self, alpha) -> None:
        self.alpha = alpha if isinstance(alpha, torch.Tensor) else float(alpha)

    def forward(self, x):
        return Reverse.apply(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def gradient_reversal(x, alpha=1.0):
    """The functional form of the reference GRL."""
    return Reverse.apply(x, float(alpha))


# --- the plainest GRLs for columns the reference cannot run (core/controls.py) -----------------

class CompositeGRL(nn.Module):
    """The reversal in plain aten arithmetic: `d + (x - d) * -alpha` with `d = x.detach()`.

    Its value is x (for finite x: `x - d` is 0) and its derivative -alpha, with no
    autograd.Function, so export, TorchScript, FX, torch.func and compiled torch.func keep it.
    Alpha is a 0-d float64 buffer set in place, so a traced or compiled form reads the current
    value. The control of the columns a Function cannot run; not for infinite inputs (x - d is
    nan there), which those columns never use.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("neg_alpha", torch.tensor(-float(alpha), dtype=torch.float64))

    @torch.no_grad()
    def set_alpha(self, alpha) -> None:
        self.neg_alpha.fill_(-float(alpha))

    def forward(self, x):
        d = x.detach()
        return d + (x - d) * self.neg_alpha


def composite_reversal(x, alpha=1.0):
    return CompositeGRL(alpha)(x)


@functools.lru_cache(maxsize=1)
def library_op():
    """A minimal `torch.library` GRL op, `grl_conformance::reverse(x, neg_alpha)`: a copy forward
    (a custom op may not return an alias of its input), `grad * neg_alpha` backward, a fake
    kernel. Registered on first use, never at import."""

    @torch.library.custom_op("grl_conformance::reverse", mutates_args=())
    def reverse(x: torch.Tensor, neg_alpha: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @reverse.register_fake
    def _(x, neg_alpha):
        return torch.empty_like(x)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])

    def backward(ctx, grad):
        (neg_alpha,) = ctx.saved_tensors
        return grad * neg_alpha.to(grad.dtype), None

    reverse.register_autograd(backward, setup_context=setup_context)
    return reverse


class LibraryOpGRL(CompositeGRL):
    """The control of the columns that need a registered op (`opcheck`, `export`)."""

    def forward(self, x):
        return library_op()(x, self.neg_alpha)


def library_reversal(x, alpha=1.0):
    return LibraryOpGRL(alpha)(x)
