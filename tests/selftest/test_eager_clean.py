"""A correct GRL must pass every eager check: the checks do not false-alarm.

Two small, clean GRLs from tests/selftest/grls.py (not from impls/, which may change): the
float-alpha GRL that is also the harness's trusted reference and the base every mutant breaks
(`setup_context`, returns a view, one multiply by `-alpha`), and one that clones in forward and
keeps alpha as a float64 0-d buffer (state) updated in place.
"""
from __future__ import annotations

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core.runner import run_check
from tests.selftest.grls import BufferAlphaLayer, FloatAlphaLayer, impl_of

CLEAN = [impl_of("clean_view_function", FloatAlphaLayer),
         impl_of("clean_buffer_clone", BufferAlphaLayer)]
# Every column of the eager area, from the catalogue (a new column is covered the day it is
# registered; docs/checks.md and the registry are kept equal by test_catalogue_docs.py).
EAGER_IDS = [c.id for c in catalogue.checks_in("eager")]


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
    from tests.selftest.mutants_reversal import MUTANTS

    m = next(m for m in MUTANTS if m.impl.name == "eager_alpha_float32")
    detail = run_check(m.impl, catalogue.get("backward.reversal")).detail
    for part in ("float64", "shape", "strides", "alpha=", "relative error"):
        assert part in detail, detail
