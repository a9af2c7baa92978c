"""GRLs for the gate's end-to-end self-test, added to a run with --grl-impl."""
import torch
from torch import nn


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


class GateGood(nn.Module):
    """A correct GRL: the baseline says it failed, so it is an improvement."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def set_alpha(self, alpha):
        self.alpha = alpha

    def forward(self, x):
        return _Reverse.apply(x, self.alpha)


class GateMutant(GateGood):
    """Forward scales its input: the baseline claims it passed, so it is a planted regression."""

    def forward(self, x):
        return _Reverse.apply(x * (1 + 1e-3), self.alpha)


class GateNew(GateGood):
    """A row the baseline does not have: listed as new."""


class GateKnown(GateMutant):
    """Fails, and the baseline says it failed the same way: a known failure (xfail)."""
