"""Mutants for the eager graph checks (harness/checks/eager/graph.py): several GRLs in one
graph, an in-place op right after the layer. Each is right with one GRL in plain eager (the
checks under `passes` stay green) and wrong only where its column looks."""
from __future__ import annotations

from torch import nn

from tests.selftest.grls import FloatAlphaLayer
from tests.selftest.mutation import mutant


class _ClassAlphaLayer(nn.Module):
    """Alpha kept on the class (a shortcut seen in research code): one instance is right, two with
    different alphas both use the last one set."""

    alpha = 1.0

    def __init__(self, alpha=1.0):
        super().__init__()
        type(self).alpha = float(alpha)

    def set_alpha(self, alpha):
        type(self).alpha = float(alpha)

    def forward(self, x):
        return FloatAlphaLayer(type(self).alpha)(x)


class _OutputViewHook(FloatAlphaLayer):
    """Reverses by a hook on an output VIEW: relu_ on the output rebases the view's history and
    drops the hook, so the gradient silently arrives unreversed (measured on torch 2.13)."""

    def forward(self, x):
        y = x.view_as(x)
        if y.requires_grad:
            a = self.alpha
            y.register_hook(lambda g: g * -a)
        return y


MUTANTS = [
    mutant("class_alpha", _ClassAlphaLayer,
           trips={"graph.several_grls": "fail"},
           passes=("backward.reversal", "alpha.update", "memory.saved"),
           why="alpha on the class: two GRLs with different alphas share the last one"),
    mutant("eager_output_view_hook", _OutputViewHook, trips={"inplace.after": "fail"},
           why="hook on an output view is dropped by relu_: gradient silently unreversed",
           passes=("forward.identity", "backward.reversal", "graph.shared_trunk", "alpha.update")),
]
