"""The machinery of the compile and transform checks, tested where a mutant cannot reach it."""
from __future__ import annotations

import numpy as np
import torch

from grl_conformance import checks as catalogue
from grl_conformance.checks import compile as compile_checks
from grl_conformance.core.registry import resolve
from grl_conformance.core.runner import run_check
from tests.selftest.mutants_transforms import _CustomOpLayer
from tests.selftest.mutation import mutant


def test_dynamo_config_is_restored_after_a_cell():
    before = torch._dynamo.config.fail_on_recompile_limit_hit
    run_check(resolve("grl_conformance.impls.naive_function:IMPL"), catalogue.get("compile.eager"))
    assert torch._dynamo.config.fail_on_recompile_limit_hit == before


def test_fresh_dynamo_sets_the_no_fallback_flag():
    with compile_checks.fresh_dynamo():
        assert torch._dynamo.config.fail_on_recompile_limit_hit is True


def test_alpha_schedule_is_dann_with_numpy_floats():
    alphas = compile_checks.alpha_schedule_values()
    assert len({float(a) for a in alphas}) >= 10
    assert {type(a) for a in alphas} == {float, np.float64, np.float32}
    assert float(alphas[0]) == 0.0 and float(alphas[-1]) > 0.99
    values = [float(a) for a in alphas]
    assert values == sorted(values)


def test_dispatch_recorder_finds_custom_ops_only():
    op_impl = mutant("probe_custom_op", _CustomOpLayer, trips={}, why="", kind="library").impl
    found = compile_checks.custom_ops_called(op_impl)
    assert [str(op) for op in found] == ["grl_selftest_transforms.grl.default"]
    assert compile_checks.custom_ops_called(resolve("grl_conformance.impls.naive_function:IMPL")) == {}
