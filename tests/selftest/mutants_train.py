"""Mutants for the train checks (harness/checks/train.py): GRLs a DANN cannot adapt through."""
from __future__ import annotations

import torch

from tests.selftest.grls import FloatAlphaLayer
from tests.selftest.mutation import mutant


class _IdentityBackward(FloatAlphaLayer):
    """Forward and backward are both the identity: the features cooperate with the domain head."""

    def forward(self, x):
        return x.view_as(x)


class _InputHook(FloatAlphaLayer):
    """Reverses through a hook on its input: the shared features, so the label head's gradient
    is reversed too."""

    def forward(self, x):
        if x.requires_grad:
            alpha = self.alpha
            x.register_hook(lambda g: g * -alpha)
        return x


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.alpha, None


class _SignFlipped(FloatAlphaLayer):
    """Backward multiplies by +alpha instead of -alpha."""

    def forward(self, x):
        return _Scale.apply(x, self.alpha)


_BOTH = {"train.dann_moons": "fail", "train.dann_moons_compiled": "fail"}

MUTANTS = [
    mutant("train_identity_backward", _IdentityBackward, trips=_BOTH,
           why="no reversal: the features learn to separate the domains"),
    mutant("train_input_hook", _InputHook, trips=_BOTH, kind="hook",
           why="a hook on the shared features reverses the label head's gradient too"),
    mutant("train_sign_flipped", _SignFlipped, trips=_BOTH,
           why="backward is +alpha * grad: features help the domain head"),
]
