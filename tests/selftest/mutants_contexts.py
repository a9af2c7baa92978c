"""Mutants for the context columns: those of harness/checks/eager/contexts.py (amp.autocast,
checkpoint.*, serialize.*, grad_mode.nested), and the contexts other areas hold (amp.grad_scaler in train.py,
onnx.export in transforms.py, dtensor in dtensor_rank.py), which share these GRLs.

Each is right in plain eager (the eager checks it lists under `passes` stay green) and wrong
only in the context its column builds. Classes are module-level: torch.save pickles them and
child processes (dtensor ranks) rebuild them by name through `tests.selftest.mutation:NAME`.
"""
from __future__ import annotations

import torch
from torch import nn

from grl_conformance.core.reference import Reverse
from tests.selftest.grls import FloatAlphaLayer
from tests.selftest.mutation import mutant

# --- amp -------------------------------------------------------------------------------------

class _CastFp16Function(torch.autograd.Function):
    """The AMP recipe for a custom Function, copied from a float16 CUDA codebase:
    `custom_fwd(cast_inputs=torch.float16)`. Outside autocast it does nothing."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float16)
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):
        return grad * -ctx.alpha, None


class _CastFp16(FloatAlphaLayer):
    def forward(self, x):
        return _CastFp16Function.apply(x, self.alpha)


class _SanitizeUnderAmpFunction(torch.autograd.Function):
    """Under autocast, 'protects' the trunk from the domain head's overflow by zeroing
    non-finite reversed gradients; outside autocast it is a plain correct reversal."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        ctx.amp = torch.is_autocast_enabled(x.device.type)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        out = grad * -ctx.alpha
        return (torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0) if ctx.amp else out), None


class _SanitizeUnderAmp(FloatAlphaLayer):
    def forward(self, x):
        return _SanitizeUnderAmpFunction.apply(x, self.alpha)


# --- checkpointing ---------------------------------------------------------------------------

class _FifoFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, owner):
        ctx.owner = owner
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * -ctx.owner.pending.pop(0), None


class _FifoAlpha(FloatAlphaLayer):
    """Each forward queues the alpha it ran with; its backward takes the oldest one (one
    forward per backward, as in eager). A checkpointed forward runs twice per backward, so
    the queue falls a step behind: the gradient of step k uses the alpha of step k-1."""

    def __init__(self, alpha=1.0):
        super().__init__(alpha)
        self.pending = []

    def forward(self, x):
        self.pending.append(self.alpha)
        return _FifoFunction.apply(x, self)


class _UnguardedHook(FloatAlphaLayer):
    """A copy with a reversing hook, registered whether or not grad is enabled: raises in
    the no_grad first pass of reentrant checkpointing. (A *view* would not raise: on torch 2.13
    a view of a tensor that requires grad still requires grad under no_grad, measured.)"""

    def forward(self, x):
        y = x.clone()
        alpha = self.alpha
        y.register_hook(lambda g: g * -alpha)
        return y


# --- serialization ---------------------------------------------------------------------------

class _ClassAlphaFunction(torch.autograd.Function):
    """The classic `GradReverse.lambd = lambd`: alpha is a class attribute of the Function."""

    alpha = 1.0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * -_ClassAlphaFunction.alpha


class _ClassAlpha(nn.Module):
    """Every instance, copy and loaded model shares one alpha (the Function's class attribute)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        _ClassAlphaFunction.alpha = float(alpha)

    def set_alpha(self, alpha):
        _ClassAlphaFunction.alpha = float(alpha)

    def forward(self, x):
        return _ClassAlphaFunction.apply(x)


class _KeepsOutput(FloatAlphaLayer):
    """Keeps its last output (for a feature-alignment loss): a non-leaf tensor on the module."""

    def forward(self, x):
        y = Reverse.apply(x, self.alpha)
        self.last = y
        return y


class _LambdaSchedule(FloatAlphaLayer):
    """Stores its schedule as a lambda on the module: torch.save(model) cannot pickle it."""

    def __init__(self, alpha=1.0):
        super().__init__(alpha)
        self.schedule = lambda p: 2.0 / (1.0 + torch.exp(torch.tensor(-10.0 * p)).item()) - 1.0

    def forward(self, x):
        return Reverse.apply(x, self.alpha)


# --- custom ops: ONNX translations and DTensor sharding rules (the fixes a user applies) -----

def _typed(fn):
    fn.__annotations__ = {"x": torch.Tensor, "alpha": float, "return": torch.Tensor}
    return fn


def _op(name: str):
    def reverse(x, alpha):
        return x.clone()

    reverse = _typed(reverse)
    op = torch.library.custom_op(f"grl_ctx_selftest::{name}", mutates_args=())(reverse)
    op.register_fake(lambda x, alpha: torch.empty_like(x))

    def setup(ctx, inputs, output):
        ctx.alpha = inputs[1]

    op.register_autograd(lambda ctx, grad: (grad * -ctx.alpha, None), setup_context=setup)
    return getattr(torch.ops.grl_ctx_selftest, name).default


_OP_SHARDED = _op("rev_sharded")
_OP_BAD_SHARDING = _op("rev_bad_sharding")


def _register_sharding() -> None:
    try:
        from torch.distributed.tensor import Replicate, Shard
        from torch.distributed.tensor.experimental import register_sharding
    except ImportError:  # no torch.distributed: the dtensor column skips
        return

    @register_sharding(_OP_SHARDED)
    def _right(x, alpha):
        # identity: every placement passes through unchanged
        rules = [([Shard(d)], [Shard(d), None]) for d in range(x.ndim)]
        return rules + [([Replicate()], [Replicate(), None])]

    @register_sharding(_OP_BAD_SHARDING)
    def _wrong(x, alpha):
        # copy-paste slip: a sharded input is declared to give a replicated output
        rules = [([Replicate()], [Shard(d), None]) for d in range(x.ndim)]
        return rules + [([Replicate()], [Replicate(), None])]


_register_sharding()


def _identity_translation():
    from onnxscript import opset18 as op

    def reverse(x, alpha: float):
        return op.Identity(x)

    return {_OP_SHARDED: reverse}


def _backward_as_translation():
    from onnxscript import opset18 as op

    def reverse(x, alpha: float):
        # the slip: translating the backward formula (-alpha * x) instead of the forward
        return op.Mul(x, op.Constant(value_float=-alpha))

    return {_OP_SHARDED: reverse}


class _OpSharded(FloatAlphaLayer):
    """A custom-op GRL with both fixes applied right: a sharding rule and an ONNX translation."""

    onnx_translation_table = staticmethod(_identity_translation)

    def forward(self, x):
        return _OP_SHARDED(x, self.alpha)


class _OpBadOnnx(_OpSharded):
    onnx_translation_table = staticmethod(_backward_as_translation)


class _OpBadSharding(FloatAlphaLayer):
    def forward(self, x):
        return _OP_BAD_SHARDING(x, self.alpha)


class _ShortcutUnderModesLayer(FloatAlphaLayer):
    """Reverses in eager and in plain checkpointing, but takes an unreversed shortcut whenever a
    TorchDispatchMode is active (as a GRL that thinks it is being traced might): selective
    checkpointing runs the forward under one."""

    def forward(self, x):
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        if _get_current_dispatch_mode() is not None:
            return x.view_as(x)
        return super().forward(x)


# --- grad_mode.nested --------------------------------------------------------------------------

class _StickyEval(FloatAlphaLayer):
    """Notes the first call made with autograd off ("we are evaluating") and stops reversing
    from then on: after the first evaluation loop, training loses its reversal."""

    evaluating = False

    def forward(self, x):
        if not torch.is_grad_enabled():
            self.evaluating = True
        return x.view_as(x) if self.evaluating else super().forward(x)


class _GraphUnderNoGrad(FloatAlphaLayer):
    """Forces grad mode on inside forward (so that its reversal "always works"): under no_grad it
    still builds a graph, which an evaluation loop keeps alive for every batch."""

    def forward(self, x):
        with torch.enable_grad():
            return super().forward(x)


MUTANTS = [
    mutant("sac_shortcut", _ShortcutUnderModesLayer,
           trips={"checkpoint.selective": "fail"},
           passes=("backward.reversal", "checkpoint.reentrant", "checkpoint.nonreentrant"),
           why="drops the reversal under a dispatch mode: only selective checkpointing shows it"),
    mutant("ctx_custom_fwd_fp16", _CastFp16, trips={"amp.autocast": "fail", "amp.grad_scaler": "fail"},
           why="custom_fwd(cast_inputs=float16): the output is float16 under a bfloat16 region, "
               "and the scaled gradient overflows float16's range on its way back",
           passes=("forward.identity", "backward.reversal")),
    mutant("ctx_amp_sanitize", _SanitizeUnderAmp, trips={"amp.grad_scaler": "fail"},
           why="zeroes non-finite gradients under autocast: the trunk steps on an overflowed step",
           passes=("backward.reversal", "amp.autocast")),
    mutant("ctx_fifo_alpha", _FifoAlpha,
           trips={"checkpoint.reentrant": "fail", "checkpoint.nonreentrant": "fail",
                  "checkpoint.compiled": "fail"},
           why="alpha queued per forward: a checkpointed forward runs twice, the queue lags a step",
           passes=("alpha.update",)),
    mutant("ctx_unguarded_hook", _UnguardedHook, trips={"checkpoint.reentrant": "error"},
           why="register_hook without a requires_grad guard raises in reentrant's no_grad pass",
           passes=("checkpoint.nonreentrant",)),
    mutant("ctx_class_alpha", _ClassAlpha,
           trips={"serialize.copy": "fail", "serialize.save": "fail", "serialize.state_dict": "fail"},
           why="alpha is a class attribute of the Function: copies and loaded models share it",
           passes=("alpha.update", "backward.reversal")),
    mutant("ctx_keeps_output", _KeepsOutput, trips={"serialize.copy": "error"},
           why="keeps its last output (a non-leaf tensor): copy.deepcopy raises"),
    mutant("ctx_lambda_schedule", _LambdaSchedule, trips={"serialize.save": "error"},
           why="a lambda on the module: torch.save(model) cannot pickle it",
           passes=("serialize.copy", "serialize.state_dict")),
    mutant("ctx_op_bad_onnx", _OpBadOnnx, trips={"onnx.export": "fail"}, kind="library",
           why="its ONNX translation computes the backward formula (-alpha * x), not the identity "
               "(its float alpha is an export constant: `export` fails it as alpha frozen)",
           passes=("backward.reversal", "compile.eager")),
    mutant("ctx_op_sharded", _OpSharded, trips={}, kind="library",
           why="not a mutant: a custom-op GRL with a right sharding rule and ONNX translation",
           passes=("onnx.export", "dtensor")),
    mutant("ctx_op_bad_sharding", _OpBadSharding, trips={"dtensor": "fail"}, kind="library",
           why="its sharding rule declares a replicated output for a sharded input",
           passes=("backward.reversal",)),
    mutant("ctx_sticky_eval", _StickyEval, trips={"grad_mode.nested": "fail"},
           why="the first call under no_grad switches the reversal off for good",
           passes=("backward.reversal", "alpha.update")),
    mutant("ctx_graph_under_no_grad", _GraphUnderNoGrad, trips={"grad_mode.nested": "fail"},
           why="enable_grad inside forward: a graph is built under no_grad",
           passes=("forward.identity", "backward.reversal", "alpha.update")),
]
