"""GRL by the detach trick (kind "detach"): plain tensor arithmetic, no Function, no hook.

    y = torch.add(d, x - d, alpha=-alpha)      with d = x.detach()

Value: `x - d` is exactly 0 for every finite x, and `d + (-alpha) * 0` is exactly d (signed
zeros included: -0.0 + -0.0 = -0.0, 0.0 + -0.0 = 0.0). Gradient: d is constant, so
dy/dx = -alpha, delivered by `add`'s own backward as ONE multiply of the gradient by the
scalar -alpha (a Python float: full double precision for float64, nothing saved for backward).
`torch.add(..., alpha=)` rather than `d + neg_alpha * (x - d)` saves a forward kernel.

Known, unavoidable defect: for x = +-inf, `x - d` is inf - inf = nan, so the output is nan
where the input was +-inf. Every detach formula needs `x - x.detach()` to carry the gradient,
so no arithmetic fixes it; masking infinities would be special-casing. forward.identity shows
it. Finite inputs and nan are exact.

Other consequences of the kind: the forward costs two elementwise kernels and allocates two
activation-sized temporaries (a traceable graph that inductor can fuse away); alpha is a
Python float (not in state_dict, a constant to torch.compile); being ordinary ops, it works
under torch.func, export and jit without any registration.
"""
from __future__ import annotations

import torch
from torch import nn

from harness.registry import Impl, seed_api


def _reverse(x: torch.Tensor, neg_alpha: float) -> torch.Tensor:
    d = x.detach()
    return torch.add(d, x - d, alpha=neg_alpha)


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


IMPL = Impl(name="detach", kind="detach", load=seed_api(__name__))
