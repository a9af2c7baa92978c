"""The models around a GRL, seeded so that the model around an implementation and around the
reference GRL (`core.reference`) are the same, and one step through them.

- `linear_grl_linear` (Linear -> GRL -> Linear): `impl_model`, `reference_model` (the truth),
  `unreversed_model` (what a lost reversal gives); `step` and its truths;
- `Dann` (a trunk, a task head, a domain head behind the GRL), `dann_loss`, `grads_of`.
"""
from __future__ import annotations

import torch
from torch import nn

from grl_conformance.checks.kit.inputs import ALPHA, FEATURES, OUT
from grl_conformance.core.reference import ReferenceGRL


def linear_grl_linear(grl: nn.Module, seed: int = 0,
                      sizes: tuple[int, int, int] = (FEATURES, FEATURES, OUT)) -> nn.Sequential:
    """Linear(4, 4) -> grl -> Linear(4, 2) (or `sizes`), weights seeded independently of the
    GRL, so the model around the implementation and around the reference GRL are the same."""
    gen = torch.Generator().manual_seed(seed)
    first, last = nn.Linear(sizes[0], sizes[1]), nn.Linear(sizes[1], sizes[2])
    with torch.no_grad():
        for p in (*first.parameters(), *last.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen))
    return nn.Sequential(first, grl, last)


def impl_model(impl, alpha=ALPHA) -> nn.Sequential:
    """Linear -> the implementation's layer -> Linear."""
    return linear_grl_linear(impl.api.layer(alpha=alpha))


def reference_model(alpha=ALPHA) -> nn.Sequential:
    """Linear -> the trusted reference GRL -> Linear: the truth for `impl_model`."""
    return linear_grl_linear(ReferenceGRL(float(alpha)))


def unreversed_model() -> nn.Sequential:
    """Linear -> identity -> Linear: the gradients a GRL that lost its reversal produces."""
    return linear_grl_linear(nn.Identity())


def step(fn, model, x, upstream):
    """One forward/backward of `fn` (model or its compiled form): (output, input grad, param grads)."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    out.backward(upstream)
    return out.detach(), x.grad, [p.grad for p in model.parameters()]


def reference_step(x, upstream, alpha=ALPHA):
    """The truth for one step of `impl_model(impl, alpha)`."""
    model = reference_model(alpha)
    return step(model, model, x, upstream)


def unreversed_step(x, upstream):
    model = unreversed_model()
    return step(model, model, x, upstream)


class Dann(nn.Module):
    """Shared trunk, a task head, a domain head behind the GRL. `grl` may be a module or a
    callable; `segment` wraps the domain branch (activation checkpointing)."""

    def __init__(self, grl, segment=None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.trunk, self.task, self.domain = nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.grl = grl
        self.segment = segment

    def branch(self, f):
        return self.domain(self.grl(f))

    def forward(self, x):
        f = self.trunk(x)
        dom = self.segment(self.branch, f) if self.segment is not None else self.branch(f)
        return self.task(f), dom


def dann_loss(outputs, ct, cd, mean: bool = False):
    """Task loss plus domain loss, linear in the outputs (every gradient is exact to judge).
    mean: divided by the rows, as data-parallel training averages its ranks' gradients."""
    task, dom = outputs
    loss = (task.float() * ct).sum() + (dom.float() * cd).sum()
    return loss / task.shape[0] if mean else loss


def grads_of(model: nn.Module) -> dict:
    return {n: (None if p.grad is None else p.grad.detach().clone())
            for n, p in model.named_parameters() if not n.startswith("grl.")}
