"""GRL by the detach trick (kind "detach"): plain tensor arithmetic, no Function, no hook.

    y = d + (-alpha) * (x - d)     with d = x.detach(), computed as torch.lerp(d, x, -alpha)

Value: `x - d` is exactly 0 for every finite x, so y is exactly d (signed zeros included, for
alpha >= 0; lerp's other branch, x - (x - d) * (1 + alpha), is exactly x too). Gradient: d is
a constant, so dy/dx = -alpha, delivered by lerp's own backward (`grad * weight`) as ONE
multiply by the stored -alpha, the only thing saved (0-d). `lerp` fuses the formula into one
forward kernel with no activation-sized temporary (`d + neg_alpha * (x - d)` costs three
kernels, `addcmul` two plus an extra multiply in its backward).

Known, unavoidable defect: for x = +-inf, `x - d` is inf - inf = nan, so the output is nan
where the input was +-inf. Every detach formula needs `x - x.detach()` to carry the gradient,
so no arithmetic fixes it, and masking infinities would be special-casing. forward.identity
shows it (fail). Finite inputs and nan are exact. Likewise lerp reads its weight in x's dtype,
so |alpha| beyond float16's range (65504) makes a float16 forward nan (0 * inf); no GRL alpha
is that large, and the backward uses the float64 alpha regardless.

Alpha: -alpha is a 0-d float64 buffer updated in place (as in `library_op`), so torch.compile
sees graph data, not a constant (no recompile per alpha), a CUDA graph replay reads the
current value, DDP broadcasts it and state_dict holds it. A 0-d weight does not promote a
dimensioned x; a 0-d x (all operands 0-d promote to float64) is cast back, exactly. The
functional form passes a Python float as the weight (same single kernel).

lerp saves the 0-d alpha through autograd, so a set_alpha between a forward and its backward
raises the saved-tensor version error (a clear error, never a mixed gradient); the op rows
and the hook read the buffer at backward time instead. DDP's buffer broadcast does not bump
the version (measured, gloo, two forwards before one backward).

Being ordinary ops, it works under torch.func, export and TorchScript with no registration,
and inductor fuses it into its neighbours.
"""
import torch
from torch import Tensor

from grl_conformance.core.registry import Impl, seed_api
from grl_conformance.impls._alpha import NegAlphaLayer


def _reverse(x: Tensor, neg_alpha) -> Tensor:
    y = torch.lerp(x.detach(), x, neg_alpha)
    return y if y.dtype == x.dtype else y.to(x.dtype)  # 0-d x with the 0-d float64 alpha


class GradientReversalLayer(NegAlphaLayer):
    def forward(self, x: Tensor) -> Tensor:
        return _reverse(x, self.neg_alpha)


def gradient_reversal(x: Tensor, alpha=1.0) -> Tensor:
    return _reverse(x, -alpha.detach() if isinstance(alpha, Tensor) else -float(alpha))


IMPL = Impl(name="detach", kind="detach", load=seed_api(__name__), reference=True)
