"""The machinery of the compile and transform checks, tested where a mutant cannot reach it."""
from __future__ import annotations

import numpy as np
import torch

from grl_conformance import checks as catalogue
from grl_conformance.checks import compile as compile_checks
from grl_conformance.core import compat
from grl_conformance.core.registry import resolve
from grl_conformance.core.runner import run_check
from tests.selftest.mutants_transforms import _CustomOpLayer
from tests.selftest.mutation import mutant


def test_dynamo_config_is_restored_after_a_cell():
    before = torch._dynamo.config.fail_on_recompile_limit_hit
    run_check(resolve("grl_conformance.impls.naive_function:IMPL"), catalogue.get("compile.eager"))
    assert torch._dynamo.config.fail_on_recompile_limit_hit == before


def test_fresh_dynamo_sets_the_no_fallback_flag():
    with compat.fresh_dynamo():
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


def test_only_a_missing_compiler_makes_an_inductor_cell_a_skip(monkeypatch):
    """inductor columns skip where the machine cannot build C++; any other failure of the plain
    probe graph (the release-day fork error, say) is no fact about the machine: the cell errors,
    so its control fails and the column is not judged, saying why."""
    from grl_conformance.core.outcome import Skipped

    class InvalidCxxCompiler(RuntimeError):
        pass

    def raise_(exc):
        def kernels(layer):
            raise exc
        return kernels

    wrapped = RuntimeError("backend compiler failed")
    wrapped.__cause__ = InvalidCxxCompiler("No working C++ compiler found")
    for exc in (InvalidCxxCompiler("No working C++ compiler found"), wrapped):
        compile_checks._inductor_probe.cache_clear()
        monkeypatch.setattr(compile_checks, "_inductor_kernels", raise_(exc))
        try:
            compile_checks._require_inductor()
            raise AssertionError("a missing compiler must be a skip")
        except Skipped as skipped:
            assert "cannot compile" in str(skipped)
    fork = RuntimeError("Unable to handle autograd's threading in combination with fork-based "
                        "multiprocessing")
    compile_checks._inductor_probe.cache_clear()
    monkeypatch.setattr(compile_checks, "_inductor_kernels", raise_(fork))
    try:
        compile_checks._require_inductor()
        raise AssertionError("a non-compiler error must propagate")
    except Skipped:
        raise AssertionError("labelled as something the machine lacks") from None
    except RuntimeError as exc:
        assert "autograd's threading" in str(exc)
    compile_checks._inductor_probe.cache_clear()
