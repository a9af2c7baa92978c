"""GRL as a `torch.library.custom_op` with alpha as a 0-d tensor (kind "library").

    grl::reverse(Tensor x, Tensor neg_alpha) -> Tensor

Why a 0-d tensor and not a float argument: a float argument is baked into the compiled graph
(one recompile per distinct alpha, and a CUDA graph replays the value it captured). A tensor
argument is graph data: a new alpha never recompiles and a replay reads the current value.
The layer keeps it as a registered buffer, `neg_alpha`, updated IN PLACE by `set_alpha`
(`fill_`), so it follows `.to(device)`, is broadcast by DDP (`broadcast_buffers`), is in
`state_dict`, and any graph that captured its address sees the new value. It stores -alpha so
the backward is one multiply. It is float64 so a float64 input keeps alpha's full precision;
a 0-d tensor does not promote a dimensioned one, so a float32 gradient stays float32 (only a
0-d gradient needs the cast back). `module.half()` would convert it like any float buffer.

Costs of the kind, kept because the kind imposes them: custom ops may not return an alias of
an input, so the forward is a clone (one pass over memory, opaque to inductor: it cannot be
fused away); `register_autograd` has no forward-mode rule, so torch.func.jvp does not get the
reversal. The backward reads `neg_alpha` from ctx rather than `save_for_backward`: the value
at backward time is used (as a CUDA graph replay would), so a set_alpha between a forward and
its backward applies to that backward instead of failing the saved-tensor version check. Only
the 0-d alpha is kept; nothing activation-sized is saved. A vmap rule is registered so
torch.func.vmap and batched gradcheck work without the slow per-sample fallback.
"""
import torch
from torch import Tensor

from grl_conformance.core.registry import Impl, seed_api
from grl_conformance.impls._alpha import NegAlphaLayer, neg_alpha_tensor


@torch.library.custom_op("grl::reverse", mutates_args=())
def reverse(x: Tensor, neg_alpha: Tensor) -> Tensor:
    return x.clone()


@reverse.register_fake
def _(x: Tensor, neg_alpha: Tensor) -> Tensor:
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output) -> None:
    ctx.neg_alpha = inputs[1]


def _backward(ctx, grad: Tensor):
    grad_input = grad * ctx.neg_alpha
    if grad_input.dtype != grad.dtype:  # both 0-d: the float64 alpha promoted it
        grad_input = grad_input.to(grad.dtype)
    return grad_input, None


reverse.register_autograd(_backward, setup_context=_setup_context)


@reverse.register_vmap
def _(info, in_dims, x: Tensor, neg_alpha: Tensor):
    x_dim, alpha_dim = in_dims
    if alpha_dim is None:
        return reverse(x, neg_alpha), x_dim
    # A batched alpha (rare): one call per alpha keeps each backward a 0-d multiply.
    xs = x.movedim(x_dim, 0) if x_dim is not None else x.expand(info.batch_size, *x.shape)
    alphas = neg_alpha.movedim(alpha_dim, 0)
    return torch.stack([reverse(xi, ai) for xi, ai in zip(xs, alphas, strict=True)]), 0


class GradientReversalLayer(NegAlphaLayer):
    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.grl.reverse(x, self.neg_alpha)  # torch.ops: scriptable, unlike the def


def gradient_reversal(x: Tensor, alpha=1.0) -> Tensor:
    return reverse(x, neg_alpha_tensor(alpha))


IMPL = Impl(name="library_op", kind="library", load=seed_api(__name__), reference=True, unsupported={
    "func.grad": "torch 2.13's custom_op autograd is an autograd.Function without setup_context",
    "func.jvp": "register_autograd has no forward-mode rule: the jvp tangent comes back zero",
})
