"""Mutants for the eager checks (harness/checks/eager.py)."""
from __future__ import annotations

import torch
from torch import nn

from tests.selftest.mutation import mutant


class _ForwardScaled(nn.Module):
    """Forward multiplies by 1 + 1e-3: not the identity."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def set_alpha(self, alpha):
        self.alpha = alpha

    def forward(self, x):
        return x * (1 + 1e-3)


MUTANTS = [
    mutant("forward_scaled", _ForwardScaled, trips={"forward.identity": "fail"},
           why="forward is not the identity"),
]
