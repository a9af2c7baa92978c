"""GRL by the detach trick (kind "detach"): plain tensor arithmetic, no Function, no hook.

    y = d + (x - d) * (-alpha)        with d = x.detach(), as ONE kernel: addcmul(d, x - d, -alpha)

Value: `x - d` is exactly 0 for every finite x, and `d + 0 * (-alpha)` is exactly d (signed
zeros included: -0.0 + -0.0 = -0.0, 0.0 + -0.0 = 0.0, for alpha >= 0). Gradient: d is a
constant, so dy/dx = -alpha, delivered by addcmul's own backward as ONE multiply of the
gradient by the stored -alpha, which is the only thing saved (0-d).

Known, unavoidable defect: for x = +-inf, `x - d` is inf - inf = nan, so the output is nan
where the input was +-inf. Every detach formula needs `x - x.detach()` to carry the gradient,
so no arithmetic fixes it, and masking infinities would be special-casing. forward.identity
shows it (fail). Finite inputs and nan are exact.

Alpha: -alpha is a 0-d float64 buffer updated in place (as in `library_op`), so torch.compile
sees graph data, not a constant (no recompile per alpha), a CUDA graph replay reads the
current value, DDP broadcasts it and state_dict holds it. A 0-d tensor does not promote a
dimensioned x; a 0-d x (everything 0-d promotes to float64) is cast back. In the forward the
float64 alpha is read at x's dtype, which does not matter: it multiplies an exact zero. The
functional form with a Python float uses `torch.add(d, x - d, alpha=-alpha)` (same count of
kernels, alpha at full precision in the backward).

Costs of the kind: two elementwise kernels and one activation-sized temporary in the forward
(inductor fuses them away when compiled). Being ordinary ops, it works under torch.func,
export and TorchScript with no registration.
"""
import torch
from torch import Tensor, nn

from harness.registry import Impl, seed_api

ALPHA_DTYPE = torch.float64


def _reverse(x: Tensor, neg_alpha) -> Tensor:
    d = x.detach()
    if isinstance(neg_alpha, Tensor):
        y = torch.addcmul(d, x - d, neg_alpha)
        return y if y.dtype == x.dtype else y.to(x.dtype)  # 0-d x with the 0-d float64 alpha
    return torch.add(d, x - d, alpha=neg_alpha)


class GradientReversalLayer(nn.Module):
    neg_alpha: Tensor

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("neg_alpha", torch.tensor(-float(alpha), dtype=ALPHA_DTYPE))

    @torch.no_grad()
    def set_alpha(self, alpha) -> None:
        if isinstance(alpha, Tensor):
            self.neg_alpha.copy_(alpha.detach().neg())
        else:
            self.neg_alpha.fill_(-float(alpha))

    @property
    def alpha(self) -> float:
        """The current alpha as a float (a device sync on CUDA; never used in forward)."""
        return -float(self.neg_alpha)

    def forward(self, x: Tensor) -> Tensor:
        return _reverse(x, self.neg_alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def gradient_reversal(x: Tensor, alpha=1.0) -> Tensor:
    return _reverse(x, -alpha.detach() if isinstance(alpha, Tensor) else -float(alpha))


IMPL = Impl(name="detach", kind="detach", load=seed_api(__name__))
