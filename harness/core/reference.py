"""The harness's own trusted GRL: the truth the checks judge an implementation against.

A check never trusts the implementation under test to say what the right answer is (its own
eager run may be just as wrong as its compiled one). Where the expected gradient is not written
out analytically, a check runs the same model with this GRL in the GRL's place, in eager mode.

Kept minimal so it is obviously right: the forward returns a view of its input, the backward
multiplies the incoming gradient by `-alpha` once. Alpha may be a Python float, or a tensor
that broadcasts against the gradient (one alpha per batch row in the distributed reference).
"""
from __future__ import annotations

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
    """The seed API (`ReferenceGRL(alpha)`, `set_alpha`) with alpha a Python float."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def set_alpha(self, alpha) -> None:
        self.alpha = float(alpha)

    def forward(self, x):
        return Reverse.apply(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def gradient_reversal(x, alpha=1.0):
    """The functional form of the reference GRL."""
    return Reverse.apply(x, float(alpha))
