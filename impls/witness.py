"""The witness row: a GRL written to pass every column of the matrix (kind "function").

It chooses its mechanism per context, because no single mechanism survives them all
(docs/impls.md, "The witness row", has the measurements):

| context                                   | mechanism                                   |
| ----------------------------------------- | ------------------------------------------- |
| eager, checkpoint, DDP/FSDP, DTensor,     | `_ReverseFast`: the same Function in the    |
| autocast, CUDA graphs (no torch.func       | old style (`forward(ctx, ...)`), which      |
| transform active)                         | skips the argument binding `setup_context`  |
|                                           | costs on every call                         |
| inside torch.func (vmap, grad, jvp, ...)  | `_Reverse`: autograd.Function, view forward |
|                                           | (`aten.alias`), backward one multiply by    |
|                                           | -alpha, `setup_context`, generated vmap     |
|                                           | rule, `jvp` = -alpha * t                    |
| torch.compile (dynamo traces it)          | `_ReverseTraced`: the same Function without |
|                                           | `jvp` (dynamo refuses a custom jvp)         |
| torch.compile of a torch.func transform   | the composite below: dynamo inlines a       |
|                                           | Function's forward there and drops its      |
|                                           | backward (the reversal lost, silently)      |
| torch.export (hence ONNX dynamo=True),    | `_composite`: plain aten arithmetic whose   |
| TorchScript, torch.fx symbolic tracing    | value is exactly x and whose derivative is  |
|                                           | -alpha (see below)                          |

Why: export records only the forward of an autograd.Function (its exported program loses the
reversal), and TorchScript of a Function cannot be saved (2.13) or raises (2.14); so those two
get plain aten ops, which carry their derivative with them. Dynamo traces a Function with
`setup_context` but refuses one with a `jvp` ("Unsupported custom jvp"); torch.func.jvp needs
it (without one: "You must implement the jvp function"). Why not the composite everywhere:
it costs four kernels and an activation-sized save, and masks the gradient at non-finite
inputs; the eager Function is the fast path: a view forward (no copy, no kernel) and one
multiply by the stored -alpha in backward, nothing activation-sized saved.

Speed: torch.func needs `setup_context`, and `Function.apply` binds the arguments of such a
Function with `inspect.signature` on every call (about 9 us of the 27 us an eager forward+backward
of 2^14 float32 elements takes on one CPU thread, torch 2.13); outside a torch.func transform
(`torch._C._are_functorch_transforms_active()`, one C call of 0.04 us) the old-style twin runs
instead: as fast as a C++ op row (docs/impls.md, "The witness row", has the sweep).

The four mechanisms are class attributes / one method of the layer (`fast_function`,
`eager_function`, `traced_function`, `_scripted`) so that the test twins in tests/selftest/mutants_witness.py
can break exactly one and show which columns go through it. The functional form
`gradient_reversal` makes the same choice outside TorchScript; only the module is scriptable.

The composite (export and TorchScript only):

    d = x.detach();  y = d + nan_to_num(x - d) * neg_alpha

`x - d` is +0 for every finite x, nan for +-inf and nan; nan_to_num makes it +0 everywhere;
times neg_alpha (which carries the sign bit for every alpha >= 0, alpha = 0 included, stored as
-0.0) it is -0.0, and `d + (-0.0)` is d bit for bit: +-0, +-inf and nan come out unchanged,
which the plain detach trick (`d + w (x - d)`, inf - inf = nan) cannot do. Its derivative is
`neg_alpha * isfinite(x - d)`: -alpha for every finite input, 0 at a +-inf or nan input
(nan_to_num's derivative masks non-finite elements). That is the composite's one limit; it
never meets an infinite activation in the checked contexts, and the eager, compiled and
torch.func paths give -alpha everywhere. It saves `x - d` for backward (activation-sized),
which only matters for a TorchScript module trained as such.

Alpha: -alpha in a 0-d float64 buffer `neg_alpha` (impls/_alpha.py), updated in place by
`set_alpha`: no recompile per alpha (it is graph data), read from device memory at CUDA-graph
replay (no `.item()`, no host sync anywhere), broadcast by DDP, in `state_dict`, exact for
float64 inputs, and a 0-d tensor does not promote a dimensioned gradient (a 0-d gradient is cast
back, so the gradient dtype is always the input's; a float16 gradient stays float16). Under
DTensor the 0-d buffer is implicitly replicated. The eager Functions keep the buffer on ctx
(not `save_for_backward`): backward reads alpha at backward time, as a replayed graph does, and
eager saved-tensor hooks never round it. The traced Function saves it with `save_for_backward`:
on torch 2.13 a compiled forward keeps a tensor stored on ctx outside `ctx.saved_tensors`
(`ctx._tensors_no_vc_check`), where compiled autograd cannot find it (an error); compiled, alpha
is saved for backward either way. Costs, measured: under torch.compile a `set_alpha` between a
forward and its backward is autograd's in-place version error (DANN sets alpha before a step),
and a compressing saved-tensor hook rounds alpha (8 B packed; bfloat16: 2^-10 relative).

No state is advanced in forward (checkpoint recomputation is harmless), the module keeps no
tensor but its buffer (deepcopy, torch.save(model) and a weights_only load work; no lambdas),
and the output dtype is the input's under autocast (no `custom_fwd(cast_inputs=...)`).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from grl_conformance.core.registry import Impl, seed_api
from grl_conformance.impls._alpha import NegAlphaLayer


def _scale(grad: Tensor, neg_alpha) -> Tensor:
    """grad * -alpha in grad's dtype: one multiply (the cast only for a 0-d grad)."""
    out = grad * neg_alpha
    return out if out.dtype == grad.dtype else out.to(grad.dtype)


class _ReverseTraced(Function):
    """The Function dynamo traces: view forward, one-multiply backward, no jvp."""

    @staticmethod
    def forward(x: Tensor, neg_alpha) -> Tensor:
        return torch.ops.aten.alias(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        neg_alpha = inputs[1]
        if isinstance(neg_alpha, Tensor):  # not on ctx: see "Alpha" above
            ctx.save_for_backward(neg_alpha)
        else:
            ctx.neg_alpha = neg_alpha

    @staticmethod
    def backward(ctx, grad: Tensor):
        neg_alpha = ctx.saved_tensors[0] if ctx.saved_tensors else ctx.neg_alpha
        return _scale(grad, neg_alpha), None


class _Reverse(_ReverseTraced):
    """The Function inside torch.func: the traced one's forward, alpha kept on ctx (read at
    backward time), a generated vmap rule and a jvp."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.neg_alpha = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _scale(grad, ctx.neg_alpha), None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, alpha_tangent):
        return _scale(x_tangent, ctx.neg_alpha)


class _ReverseFast(Function):
    """`_Reverse` in the old style, for eager outside torch.func: no per-call argument binding."""

    @staticmethod
    def forward(ctx, x: Tensor, neg_alpha) -> Tensor:
        ctx.neg_alpha = neg_alpha
        # view_as is a microsecond cheaper per call; aten.alias has the DTensor sharding rule
        # (torch >= 2.10; before it, DTensor has view_as's and not alias's)
        if type(x) is Tensor:
            return x.view_as(x)
        try:
            return torch.ops.aten.alias(x)
        except NotImplementedError:
            return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        out = grad * ctx.neg_alpha  # _scale, inlined: this is the per-call hot path
        return (out if out.dtype == grad.dtype else out.to(grad.dtype)), None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, alpha_tangent):  # forward-mode AD outside torch.func
        return _scale(x_tangent, ctx.neg_alpha)


_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


def _composite(x: Tensor, neg_alpha: Tensor) -> Tensor:
    """Plain aten ops for export and TorchScript: value exactly x, derivative -alpha."""
    d = x.detach()
    y = d + torch.nan_to_num(x - d, nan=0.0, posinf=0.0, neginf=0.0) * neg_alpha
    return y if y.dtype == x.dtype else y.to(x.dtype)


def _composite_fx(x, neg_alpha):
    """The composite for torch.fx symbolic tracing: no branch on a traced dtype (`.to` records
    a call that is free when the dtype already matches)."""
    d = x.detach()
    return (d + torch.nan_to_num(x - d, nan=0.0, posinf=0.0, neginf=0.0) * neg_alpha).to(x.dtype)


def _is_exporting() -> bool:
    """torch.compiler.is_exporting (torch >= 2.7). torch 2.6 has no such flag: there, non-strict
    export traces with make_fx (compiling, but not dynamo); strict export looks like dynamo and
    takes the traced Function path."""
    probe = getattr(torch.compiler, "is_exporting", None)
    if probe is not None:
        return probe()
    return torch.compiler.is_compiling() and not torch.compiler.is_dynamo_compiling()


def _python_path(x: Tensor, neg_alpha, eager=_Reverse, traced=_ReverseTraced,
                 fast=_ReverseFast) -> Tensor:
    """The choice outside TorchScript (read at trace time: dynamo and export see constants)."""
    if torch.compiler.is_compiling():
        if _is_exporting():  # torch.export, strict or not, and ONNX dynamo=True
            return _composite(x, neg_alpha)
        if _functorch_active():  # torch.compile(torch.func.grad(...)): aten ops keep -alpha
            return _composite_fx(x, neg_alpha)
        return traced.apply(x, neg_alpha)  # dynamo: refuses the custom jvp
    if type(x) is not Tensor and isinstance(x, torch.fx.Proxy):
        return _composite_fx(x, neg_alpha)  # torch.fx symbolic tracing
    if _functorch_active():
        return eager.apply(x, neg_alpha)  # torch.func: setup_context, vmap rule, jvp
    return fast.apply(x, neg_alpha)  # eager, checkpoint, DDP, DTensor, CUDA graphs


class GradientReversalLayer(NegAlphaLayer):
    # The three mechanisms, as class attributes so a test twin can swap exactly one
    # (tests/selftest/mutants_witness.py); TorchScript compiles only `_scripted`.
    fast_function = _ReverseFast
    eager_function = _Reverse
    traced_function = _ReverseTraced

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._scripted(x)
        return self._python(x)

    def _scripted(self, x: Tensor) -> Tensor:
        return _composite(x, self.neg_alpha)

    @torch.jit.unused
    def _python(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            if _is_exporting():
                return self._scripted(x)  # the same composite as TorchScript
            if _functorch_active():  # compiled torch.func: dynamo drops a Function's backward
                return _composite_fx(x, self._buffers["neg_alpha"])
            return self.traced_function.apply(x, self.neg_alpha)
        if type(x) is not Tensor and isinstance(x, torch.fx.Proxy):
            return _composite_fx(x, self.neg_alpha)  # torch.fx symbolic tracing: aten ops
        neg_alpha = self._buffers["neg_alpha"]  # what self.neg_alpha finds, without __getattr__
        if _functorch_active():
            return self.eager_function.apply(x, neg_alpha)
        return self.fast_function.apply(x, neg_alpha)  # the common case, checked last


def gradient_reversal(x: Tensor, alpha=1.0) -> Tensor:
    """Functional form: alpha a float (or a tensor), the same choice of mechanism."""
    neg_alpha = -alpha.detach() if isinstance(alpha, Tensor) else -float(alpha)
    return _python_path(x, neg_alpha)


IMPL = Impl(name="witness", kind="function", load=seed_api(__name__), reference=True)
