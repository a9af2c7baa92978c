"""The reference implementations do what their docstrings promise, and the C++ build is safe.

These pin the rows the matrix is calibrated against: if a reference GRL drifts, every
REFERENCE table built on it would be wrong without anyone noticing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from grl_conformance.core.registry import LoadError, builtin_impls

REPO = Path(__file__).resolve().parents[2]
REFERENCE_ROWS = {"naive_function": "function", "hook": "hook", "detach": "detach",
                  "library_op": "library", "cpp_op": "cpp"}
BEST = ["hook", "detach", "library_op", "cpp_op"]  # rows built to be as correct as their kind allows


@pytest.fixture(scope="module")
def apis():
    return {impl.name: impl.api for impl in builtin_impls() if impl.name in BEST}


def test_registry_lists_the_five_reference_rows():
    rows = {impl.name: impl.kind for impl in builtin_impls()}
    for name, kind in REFERENCE_ROWS.items():
        assert rows.get(name) == kind, f"{name}: expected kind {kind!r}, registry has {rows.get(name)!r}"


@pytest.mark.parametrize("name", BEST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_forward_is_identity(apis, name, dtype):
    x = torch.tensor([[0.0, -0.0, 1.5, float("nan")], [-3.25, 7.0, 1e4, -1e-3]], dtype=dtype)
    for inp in (x, x.t(), x[0, 2].clone(), torch.empty(0, 3, dtype=dtype)):
        inp = inp.detach().requires_grad_(True)
        y = apis[name].layer(alpha=0.1)(inp)
        assert y.dtype == inp.dtype and y.shape == inp.shape and y.stride() == inp.stride()
        same = torch.equal(torch.nan_to_num(y.detach(), nan=9.0), torch.nan_to_num(inp.detach(), nan=9.0))
        assert same and torch.equal(y.detach().signbit(), inp.detach().signbit()), f"{name}: {y} != {inp}"


def test_detach_turns_infinities_into_nan():
    """The documented, unavoidable defect of the detach trick: inf - inf is nan."""
    from grl_conformance.impls import detach

    x = torch.tensor([float("inf"), float("-inf"), 2.0], requires_grad=True)
    y = detach.GradientReversalLayer(0.5)(x)
    assert y[:2].isnan().all() and y[2] == 2.0


@pytest.mark.parametrize("name", [n for n in BEST if n != "detach"])
def test_infinities_pass_through(apis, name):
    x = torch.tensor([float("inf"), float("-inf")], requires_grad=True)
    assert torch.equal(apis[name].layer(alpha=0.5)(x).detach(), x.detach())


@pytest.mark.parametrize("name", BEST)
@pytest.mark.parametrize("shape", [(3, 5), (), (4, 2)])
def test_backward_is_minus_alpha_times_grad(apis, name, shape):
    torch.manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        g = torch.randn(shape[::-1], dtype=dtype).t() if len(shape) == 2 else torch.randn(shape, dtype=dtype)
        for how in ("layer", "fn"):
            x.grad = None
            y = apis[name].layer(alpha=0.1)(x) if how == "layer" else apis[name].fn(x, 0.1)
            y.backward(g)
            assert x.grad.dtype == dtype and x.grad.shape == x.shape, f"{name} {how}: {x.grad.dtype}"
            if dtype == torch.float64:  # exact: alpha must not have been rounded to float32
                assert torch.equal(x.grad, g * -0.1), f"{name} {how}: float64 gradient not exact"
            else:
                torch.testing.assert_close(x.grad, g * -0.1, rtol=2 ** -23, atol=0)


@pytest.mark.parametrize("name", BEST)
def test_special_values_in_the_gradient_propagate(apis, name):
    x = torch.zeros(4, requires_grad=True)
    apis[name].layer(alpha=2.0)(x).backward(torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0]))
    assert x.grad[0].isnan() and x.grad[1] == -float("inf") and x.grad[2] == float("inf") and x.grad[3] == -2.0


@pytest.mark.parametrize("name", BEST)
def test_set_alpha_takes_effect(apis, name):
    layer = apis[name].layer(alpha=1.0)
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    for alpha in (0.25, 0.1, 0.0, 3.0):
        x.grad = None
        layer.set_alpha(alpha)
        layer(x).sum().backward()
        assert torch.equal(x.grad, torch.full_like(x, -alpha)), f"{name} alpha={alpha}: {x.grad}"


@pytest.mark.parametrize("name", BEST)
def test_alpha_buffer_is_updated_in_place_and_in_state_dict(apis, name):
    layer = apis[name].layer(alpha=1.0)
    buf = layer.neg_alpha
    ptr = buf.data_ptr()
    layer.set_alpha(0.1)
    assert layer.neg_alpha is buf and buf.data_ptr() == ptr, "set_alpha must update the buffer in place"
    assert buf.dtype == torch.float64 and buf.dim() == 0
    state = layer.state_dict()
    assert torch.equal(state["neg_alpha"], torch.tensor(-0.1, dtype=torch.float64))
    other = apis[name].layer(alpha=7.0)
    other.load_state_dict(state)
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    other(x).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, -0.1))


@pytest.mark.parametrize("name", BEST)
def test_nothing_activation_sized_is_saved(apis, name):
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    x = torch.randn(64, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        apis[name].layer(alpha=0.5)(x * 1)
    assert max(saved, default=0) <= 1, f"{name} saved tensors of {saved} elements"


@pytest.mark.parametrize("name", BEST)
def test_shared_trunk_branch_is_not_reversed(apis, name):
    x = torch.randn(5, requires_grad=True)
    features = x * 2
    (features.sum() + apis[name].layer(alpha=0.5)(features).sum()).backward()
    assert torch.equal(x.grad, torch.full_like(x, 2 * (1 - 0.5)))


def test_hook_inplace_after_is_a_clear_error_not_a_lost_reversal():
    from grl_conformance.impls import hook

    features = torch.randn(5, requires_grad=True) * 1
    y = hook.GradientReversalLayer(0.5)(features)
    with pytest.raises(RuntimeError, match="modified inplace"):
        y.relu_()


@pytest.mark.parametrize("name", ["library_op", "cpp_op"])
def test_ops_pass_opcheck(apis, name):
    op = torch.ops.grl.reverse.default if name == "library_op" else torch.ops.grl_cpp.reverse.default
    x = torch.randn(4, 3, requires_grad=True).t()
    result = torch.library.opcheck(op, (x, torch.tensor(-0.3, dtype=torch.float64)), raise_exception=False)
    assert set(result.values()) == {"SUCCESS"}, result


# --- the C++ build -------------------------------------------------------------------------

def test_cpp_op_loads_from_cache_in_a_new_process(apis):
    from grl_conformance.impls import cpp_op

    path = Path(cpp_op.load_library())
    before = path.stat().st_mtime_ns
    code = ("import time; from grl_conformance.impls import cpp_op; "
            "from grl_conformance.impls._cpp_build import build_and_load as b; "
            "p = cpp_op.load_library(); print(p); print(b.last_seconds)")  # seconds: for -s runs only
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    reloaded = out.stdout.split()[-2]
    assert Path(reloaded) == path, "a second process must find the same cached library"
    assert path.stat().st_mtime_ns == before, "the cached library was rebuilt"
    assert not (path.parent / "lock").exists()
    assert path.parent.parent.name == (f"torch-{torch.__version__.replace('+', '_')}"
                                       f"-py{sys.version_info[0]}.{sys.version_info[1]}")


BROKEN_CPP = "int grl_broken() { return grl_undeclared_symbol + 1; }\n"


def test_broken_cpp_build_is_a_load_error_with_the_compiler_message(tmp_path):
    from grl_conformance.impls._cpp_build import build_and_load

    source = tmp_path / "broken.cpp"
    source.write_text(BROKEN_CPP)
    with pytest.raises(LoadError) as info:
        build_and_load("grl_selftest_broken", [source], build_dir=tmp_path / "build")
    message = str(info.value)
    assert "error:" in message and "grl_undeclared_symbol" in message, message
    assert "\n" not in message, "a LoadError is one report line"
    assert not (tmp_path / "build" / "lock").exists(), "a failed build left cpp_extension's baton behind"


def test_stale_lock_from_a_killed_build_does_not_hang(tmp_path):
    """cpp_extension waits forever on a leftover `lock`; ours removes it under its own flock."""
    source = tmp_path / "broken.cpp"
    source.write_text(BROKEN_CPP)
    build = tmp_path / "build"
    build.mkdir()
    (build / "lock").write_text("")  # what a build killed mid-way leaves behind
    code = textwrap.dedent(f"""
        from grl_conformance.core.registry import LoadError
        from grl_conformance.impls._cpp_build import build_and_load
        try:
            build_and_load("grl_selftest_stale", [{str(source)!r}], build_dir={str(build)!r})
        except LoadError as exc:
            print("LoadError:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "LoadError:" in out.stdout and "grl_undeclared_symbol" in out.stdout, out.stdout + out.stderr[-2000:]
    assert not (build / "lock").exists()


def test_compiler_errors_are_extracted_from_ninja_output():
    from grl_conformance.impls._cpp_build import compiler_errors

    output = ("Error building extension 'x': [1/2] c++ -MMD -c /tmp/a/broken.cpp -o broken.o\n"
              "FAILED: broken.o\n"
              "/tmp/a/broken.cpp:1:27: error: 'foo' was not declared in this scope\n"
              "ninja: build stopped: subcommand failed.\n")
    assert compiler_errors(output) == ["broken.cpp:1:27: error: 'foo' was not declared in this scope"]
