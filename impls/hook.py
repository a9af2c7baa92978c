"""GRL as a tensor hook on a view of the input (kind "hook").

The forward returns `x.view_as(x)`: no copy and no autograd.Function, and the reversal is a
gradient hook registered on that view. The hook sits on the VIEW's gradient, not on `x`'s:
a hook on `x` itself would scale x's total gradient, so every other branch that reads `x`
(the task head of a DANN trunk) would be reversed too.

The hook multiplies by a stored `-alpha` (one kernel); it closes over a Python float, so
nothing is saved for backward and a float64 input gets alpha at full double precision (a
Python float multiplies in the tensor's own dtype, in its opmath type for half/bfloat16).
The alpha used is the one at forward time: the hook captures it when registered.

Choices with consequences, kept on purpose:
- alpha is a Python float, not a tensor: it is not in `state_dict`, and under torch.compile a
  new value is a new constant in the graph (what dynamo does with it is the compile column's
  finding).
- the output is a view: an in-place op right after the layer on a leaf input raises (a view
  of a leaf that requires grad cannot be modified in place), which is the clear-error outcome.
- hooks run only in the autograd engine: torch.func transforms and torch.export do not see
  them, so those cells show what a hook-based GRL really gets there.
"""
from __future__ import annotations

import torch
from torch import nn

from harness.registry import Impl, seed_api


def _reverse(x: torch.Tensor, neg_alpha: float) -> torch.Tensor:
    y = x.view_as(x)
    if torch.is_grad_enabled() and y.requires_grad:
        y.register_hook(lambda grad: grad * neg_alpha)
    return y


class GradientReversalLayer(nn.Module):
    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.set_alpha(alpha)

    def set_alpha(self, alpha: float) -> None:
        self.alpha = float(alpha)
        self.neg_alpha = -self.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _reverse(x, self.neg_alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def gradient_reversal(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    return _reverse(x, -float(alpha))


IMPL = Impl(name="hook", kind="hook", load=seed_api(__name__))
