"""A transformed form must follow `set_alpha` called after the transformation: the mutants
that keep the old alpha are `fail` for exactly that reason, in every column that transforms."""
from __future__ import annotations

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core.runner import run_check
from tests.selftest.mutation import by_name

FROZEN = [
    ("compile_guardless_alpha", "compile.eager"),
    ("compile_guardless_alpha", "compile.aot_eager"),
    ("compile_guardless_alpha", "compile.inductor"),
    ("compile_guardless_composite", "compile.func_grad"),
    ("compile_guardless_composite", "compile.func_jvp"),
    ("compile_custom_op_float_alpha", "export"),
    ("compile_custom_op_float_alpha", "fx.trace"),
    ("compile_custom_op_float_alpha", "jit.trace"),
    ("transforms_float_alpha", "jit.script"),
    ("transforms_float_alpha", "jit.trace"),
    ("transforms_alpha_cached_for_functorch", "func.vmap"),
    ("transforms_alpha_cached_for_functorch", "func.grad"),
    ("transforms_alpha_cached_for_functorch", "func.jvp"),
]


@pytest.mark.parametrize(("mutant", "check_id"), FROZEN)
def test_a_form_that_keeps_the_old_alpha_is_alpha_frozen(mutant, check_id):
    outcome = run_check(by_name(mutant), catalogue.get(check_id))
    if outcome.status == "skip":
        pytest.skip(outcome.detail)
    assert (outcome.status, outcome.summary) == ("fail", "alpha frozen"), outcome.detail
    assert "set_alpha(0.7)" in outcome.detail and "whole schedule" in outcome.detail
