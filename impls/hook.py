"""GRL as a tensor hook on a view of the input (kind "hook").

The forward returns a view of x (no copy, no autograd.Function) and the reversal is a gradient
hook registered on that view. The hook sits on the VIEW's gradient, not on `x`'s: a hook on
`x` itself would scale x's total gradient, so every other branch that reads `x` (the task head
of a DANN trunk) would be reversed too.

Which view matters. With `y = x.view_as(x)`, an in-place op right after the layer
(`y.relu_()`, measured on torch 2.13) rebases y's history onto a CopySlices node, the view
node carrying the hook drops out of the graph, and the gradient comes back UNREVERSED with
no error. So the view is made by a multi-output view op, `x.unsqueeze(0).unbind(0)[0]`
(same storage, shape and strides as x): autograd forbids in-place ops on such views, so the
in-place case is a clear error instead of a silently wrong gradient. Without grad the plain
`view_as` is returned (nothing to protect).

Alpha: the layer keeps -alpha as a 0-d float64 buffer updated in place (as `library_op` does):
the hook closes over the buffer, so a CUDA graph replay or a compiled graph reads the current
value instead of a constant frozen at capture, DDP broadcasts it and state_dict holds it.
float64 keeps a float64 input's alpha exact, and a 0-d tensor does not promote a dimensioned
gradient (only a 0-d gradient needs the cast back). The hook is one multiply and nothing is
saved for backward. The functional form with a Python float multiplies by the float itself.

Limits of the kind, declared in `unsupported`: a hook acts on backward gradients only, so
forward-mode AD (torch.func.jvp) never sees it; torch.export records the forward graph,
which has no hook, so the exported program loses the reversal; TorchScript cannot compile
`register_hook` with a closure.
"""
import torch
from torch import Tensor

from grl_conformance.core.registry import Impl, seed_api
from grl_conformance.impls._alpha import NegAlphaLayer


def _scale(grad: Tensor | None, neg_alpha) -> Tensor | None:
    if grad is None:  # an undefined upstream gradient stays undefined
        return None
    out = grad * neg_alpha
    return out if out.dtype == grad.dtype else out.to(grad.dtype)  # 0-d grad * 0-d float64


def _reverse(x: Tensor, neg_alpha) -> Tensor:
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.view_as(x)
    y = x.unsqueeze(0).unbind(0)[0]
    y.register_hook(lambda grad: _scale(grad, neg_alpha))
    return y


class GradientReversalLayer(NegAlphaLayer):
    def forward(self, x: Tensor) -> Tensor:
        return _reverse(x, self.neg_alpha)


def gradient_reversal(x: Tensor, alpha=1.0) -> Tensor:
    return _reverse(x, -alpha.detach() if isinstance(alpha, Tensor) else -float(alpha))


IMPL = Impl(name="hook", kind="hook", load=seed_api(__name__), reference=True, unsupported={
    "func.jvp": "a hook acts on backward gradients; forward-mode AD never runs it",
    "export": "torch.export records the forward graph; the tensor hook is not part of it",
    "jit.script": "TorchScript cannot compile register_hook with a closure",
})
