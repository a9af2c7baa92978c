"""A correct GRL must pass every eager check: the checks do not false-alarm.

Two small, clean GRLs (not taken from impls/, which may change): the mutants' shared
`Reverse` Function (`setup_context`, returns a view, one multiply by `-alpha`), which also
proves the base every mutant breaks is itself correct, and one that clones in forward and keeps alpha as a float64 0-d
buffer (state) updated in place.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from harness import checks as catalogue
from harness.registry import GRL, Impl
from harness.runner import run_check
from tests.selftest.mutation import FloatAlphaLayer, Reverse


class CleanLayer(FloatAlphaLayer):
    """The mutants' own correct building blocks, unbroken: they must pass every check."""

    def forward(self, x):
        return Reverse.apply(x, self.alpha)


class _ReverseByBuffer(torch.autograd.Function):
    @staticmethod
    def forward(x, alpha):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.alpha = inputs[1]  # a 0-d float64 tensor: small, and not an activation

    @staticmethod
    def backward(ctx, grad):
        return grad * -ctx.alpha, None


class BufferLayer(nn.Module):
    def __init__(self, alpha=1.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float64))

    def set_alpha(self, alpha):
        self.alpha.fill_(float(alpha))

    def forward(self, x):
        return _ReverseByBuffer.apply(x, self.alpha)


def _impl(name, layer):
    api = GRL(layer, lambda x, alpha=1.0: layer(alpha=alpha)(x))
    return Impl(name=name, kind="function", load=lambda: api, origin="tests/selftest (clean)")


CLEAN = [_impl("clean_view_function", CleanLayer), _impl("clean_buffer_clone", BufferLayer)]
EAGER_IDS = ["forward.identity", "backward.reversal", "backward.gradcheck", "backward.double",
             "alpha.update", "graph.shared_trunk", "memory.saved", "inplace.after"]


def test_the_eager_catalogue_is_the_designed_one():
    assert [c.id for c in catalogue.checks_in("eager")] == EAGER_IDS


@pytest.mark.parametrize("impl", CLEAN, ids=lambda i: i.name)
@pytest.mark.parametrize("check_id", EAGER_IDS)
def test_a_correct_grl_passes(impl, check_id):
    outcome = run_check(impl, catalogue.get(check_id))
    assert outcome.status == "pass", f"{check_id} flags a correct GRL ({impl.name}): {outcome.detail}"
    assert outcome.detail


def test_details_name_design_facts():
    """The details record the design choices a user needs (view vs copy, alpha as state)."""
    view, buf = CLEAN
    assert "aliases its input" in run_check(view, catalogue.get("forward.identity")).detail
    assert "copies" in run_check(buf, catalogue.get("forward.identity")).detail
    assert "alpha is not state" in run_check(view, catalogue.get("alpha.update")).detail
    assert "alpha is state (alpha)" in run_check(buf, catalogue.get("alpha.update")).detail
    assert "raise a clear error" in run_check(view, catalogue.get("inplace.after")).detail
    assert "correct gradient" in run_check(buf, catalogue.get("inplace.after")).detail


def test_reversal_detail_is_a_counterexample():
    """A failing reversal cell names form, dtype, shape, strides, alpha and the error size."""
    from tests.selftest.mutants_eager import MUTANTS

    m = next(m for m in MUTANTS if m.impl.name == "eager_alpha_float32")
    detail = run_check(m.impl, catalogue.get("backward.reversal")).detail
    for part in ("float64", "shape", "strides", "alpha=", "relative error"):
        assert part in detail, detail
