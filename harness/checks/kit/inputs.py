"""Seeded inputs, and the alphas the columns share.

Seeded, so that the model around an implementation and around the reference GRL see the same
numbers, in every process (a distributed rank draws the same batch as the reference).
"""
from __future__ import annotations

import torch

BATCH, FEATURES, OUT = 3, 4, 2  # the Linear -> GRL -> Linear model's sizes (`models`)
ALPHA = 0.3  # non-dyadic on purpose
# The alpha a transformed form (compiled, traced, scripted, exported, a torch.func transform)
# must follow once `set_alpha` is called on the layer it was made from. A DANN trains with a
# schedule: a form that keeps the alpha it was made with trains with a frozen schedule.
ALPHA_AFTER = 0.7
# The context columns (docs/contexts.md): a power of two, so -alpha * g is exact in
# float16/bfloat16 too.
CONTEXT_ALPHA = 0.5
OFFLOAD_ALPHA = 0.1  # the offload columns: not a bfloat16 number, so a compressed alpha shows


def randn(*shape, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """A seeded normal tensor, drawn in float64 and cast: the same values in every dtype."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(dtype)


def sample_inputs(batch=BATCH, seed=1):
    """An input and a non-uniform upstream gradient for the Linear -> GRL -> Linear model."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, FEATURES, generator=gen)
    upstream = torch.randn(batch, OUT, generator=gen)
    return x, upstream


def batch(step: int = 0, rows: int = 5):
    """A step's batch for `models.Dann`: input, task target, domain target (seeded by the step)."""
    gen = torch.Generator().manual_seed(100 + step)
    return (torch.randn(rows, 6, generator=gen), torch.randn(rows, 3, generator=gen),
            torch.randn(rows, 2, generator=gen))
