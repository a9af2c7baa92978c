"""The latency sweep runs end to end on tiny sizes and writes well-formed reports.

Shape only: no timed asserts (timings on a shared machine are noise). A row that fails to
load and a row that raises in backward must become error entries, not a crashed sweep.
"""
from __future__ import annotations

import json

import pytest
import torch

from grl_conformance import cli
from grl_conformance.bench.sweep import kernels_in
from grl_conformance.core.registry import Impl
from grl_conformance.results import latency as latency_report
from grl_conformance.results import report

THIS = "tests.selftest.test_sweep"


def _broken_load():
    raise ImportError("sweep self-test: this row cannot load")


sweep_broken = Impl(name="sweep_broken", kind="external", load=_broken_load,
                    origin="tests/selftest/test_sweep.py")


class _RaiseInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("sweep self-test: backward raises")


def sweep_raising(x, alpha=1.0):
    """A GRL-shaped function whose backward raises."""
    return _RaiseInBackward.apply(x)


@torch.library.custom_op("grl_sweep_selftest::reverse", mutates_args=())
def _reverse(x: torch.Tensor, neg_alpha: float) -> torch.Tensor:
    return x.clone()


@_reverse.register_fake
def _(x, neg_alpha):
    return torch.empty_like(x)


def _reverse_setup(ctx, inputs, output):
    ctx.neg_alpha = inputs[1]


_reverse.register_autograd(lambda ctx, g: (g * ctx.neg_alpha, None), setup_context=_reverse_setup)


def sweep_custom_op(x, alpha=1.0):
    """An opaque custom-op GRL: clones forward, so inductor cannot fuse it away."""
    return _reverse(x, -float(alpha))


def _run(tmp_path, *extra, rows="naive_function,sweep_broken,sweep_raising"):
    argv = ["sweep", "--sizes", "4:6", "--dtypes", "float32", "--min-run-time", "0.002",
            "--out", str(tmp_path), "--only", rows, "--no-plot", "-q",
            "--impl", f"{THIS}:sweep_broken", "--impl", f"{THIS}:sweep_raising",
            "--impl", f"{THIS}:sweep_custom_op", *extra]
    assert cli.main(argv) == 0
    doc = json.loads((tmp_path / "latency-latest.json").read_text())
    slug = latency_report.slug_of(doc)
    assert (tmp_path / f"latency-{slug}.json").is_file()
    return doc, (tmp_path / f"latency-{slug}.md").read_text()


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    """One eager sweep over 2^4..2^6, shared by the tests below (it is the slow part)."""
    out = tmp_path_factory.mktemp("sweep")
    doc, md = _run(out, "--modes", "eager", "--threads", "1")
    return out, doc, md


def test_eager_sweep_shape_and_error_entries(eager):
    _, doc, md = eager
    assert doc["kind"] == "grl-latency-sweep" and doc["schema"] == latency_report.SCHEMA
    assert doc["config"]["sizes"] == ["2^4", "2^5", "2^6"]
    status = {r["name"]: r["status"] for r in doc["rows"]}
    assert status == {"naive_function": "ok", "sweep_broken": "error", "sweep_raising": "ok"}

    errors = {(e["subject"], e.get("context"), e["stage"]) for e in doc["errors"]}
    assert ("sweep_broken", None, "load") in errors
    assert ("sweep_raising", "alone", "2^4") in errors
    assert ("sweep_raising", "model", "2^4") in errors
    assert all(e["error"] for e in doc["errors"])

    # every (subject, context) that ran has every phase at every size, with a real median
    ran = {(r["subject"], r["context"]) for r in doc["results"]}
    assert ran == {("floor", "alone"), ("identity", "alone"), ("naive_function", "alone"),
                   ("no_grl", "model"), ("naive_function", "model")}
    assert len(doc["results"]) == len(ran) * 3 * 3
    for r in doc["results"]:
        assert r["median_s"] > 0 and r["iqr_s"] >= 0 and r["runs"] >= 1
        if r["context"] == "alone":
            assert r["ratio_floor"] > 0
            assert (r["gbps"] is None) == (r["phase"] == "fwd" or r["subject"] == "identity")
        else:
            assert r["ratio_model"] > 0 and r["overhead_floor"] is not None
    floor = [r for r in doc["results"] if r["subject"] == "floor"]
    assert all(r["ratio_floor"] == 1.0 for r in floor)

    # memory: the textbook Function saves its input (N float32) plus a 0-d alpha
    naive = [r for r in doc["results"] if r["subject"] == "naive_function"
             and r["context"] == "alone" and r["phase"] == "fwdbwd"]
    assert {r["extra_bytes"] for r in naive} == {r["n"] * 4 + 4 for r in naive}

    summary = doc["summary"]
    assert summary["label"] == "eager fwd+bwd float32 2^6"
    assert summary["rows"]["sweep_broken"]["status"] == "error"
    assert summary["rows"]["sweep_raising"]["errors"] == 2
    assert summary["rows"]["naive_function"]["eager"]["ratio_floor"] > 0
    assert summary["best"] == "naive_function"

    assert "## Summary at 2^6 elements" in md and "## Error entries" in md
    assert "sweep self-test: backward raises" in md and "cannot load" in md
    assert "### eager, float32, alone, backward" in md


def test_matrix_gains_latency_column(eager):
    tmp_path, doc, _ = eager
    found = latency_report.find([tmp_path], doc["torch"], doc["device_slug"])
    assert found is not None and found["created"] == doc["created"]
    assert latency_report.find([tmp_path], "0.0.0", doc["device_slug"]) is None
    impls = [{"name": "naive_function", "kind": "function", "origin": "x"},
             {"name": "other", "kind": "function", "origin": "y"}]
    latency_report.annotate(impls, found)
    assert impls[0]["latency"]["ratio_floor"] > 0 and "latency" not in impls[1]
    env = {"torch": doc["torch"], "python": "3", "device": "cpu", "created": "now"}
    cells = [{"impl": "naive_function", "check": "forward.identity", "status": "pass",
              "detail": ""}]
    matrix = report.build(env, impls, ["forward.identity"], cells, 0.0)
    assert report.LATENCY_HEADER in report.render_markdown(matrix)
    assert report.LATENCY_HEADER in report.render_terminal(matrix)
    plain = report.build(env, [{"name": "naive_function", "kind": "function", "origin": "x"}],
                         ["forward.identity"], cells, 0.0)
    assert report.LATENCY_HEADER not in report.render_markdown(plain)


def test_plot_written_or_explained(eager, tmp_path, capsys):
    _, doc, _ = eager
    written = latency_report.write(doc, tmp_path, plot_png=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no PNG" in capsys.readouterr().out
    else:
        assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in written)


def test_kernel_count_parser():
    code = '''
def call(self, args):
        primals_1, = args
        buf0 = empty_strided_cpu((4, ), (1, ), torch.float32)
        cpp_fused_sigmoid_0(primals_1, buf0)
        buf1 = torch.ops.grl.reverse.default(buf0, primals_2)
        cpp_fused_tanh_1(buf3)
        extern_kernels.mm(buf3, buf4, out=buf5)
        triton_poi_fused_mul_0.run(buf1, buf2, 4, stream=stream0)
        return (buf3, )

runner = Runner(partitions=[])
'''
    assert kernels_in(code) == 5


def test_compiled_rows_and_extra_kernels(tmp_path):
    """Two rows through inductor: compiled once, every size and phase timed, kernels counted.

    The custom op inside the model is the case where a compiled backward has donated
    buffers, which the backward-only statement (retain_graph=True) must not trip over."""
    subjects = ("no_grl", "naive_function", "sweep_custom_op")
    doc, md = _run(tmp_path, "--modes", "compiled", "--contexts", "model", "--sizes", "4,6",
                   rows="naive_function,sweep_custom_op")
    assert doc["errors"] == []
    assert doc["config"]["threads"] == torch.get_num_threads()  # the default, 0, resolved
    got = {(r["subject"], r["phase"], r["exp"]) for r in doc["results"]}
    assert got == {(s, p, e) for s in subjects for p in ("fwd", "bwd", "fwdbwd") for e in (4, 6)}
    assert {c["subject"] for c in doc["compile_s"]} == set(subjects)
    assert all(c["graphs_after_sweep"] >= c["graphs"] >= 1 for c in doc["compile_s"])
    # the textbook Function is traceable: inductor fuses its scale into the neighbours;
    # an opaque op is a call of its own and splits the fused forward around it
    assert doc["kernels"]["naive_function"]["extra"] == 0
    assert doc["kernels"]["naive_function"]["with"] >= 2
    assert doc["kernels"]["sweep_custom_op"]["extra"] >= 1
    assert "inductor extra kernels" in md
