"""The CUDA checks' judging, on CPU tensors (the capture itself needs a GPU)."""
from __future__ import annotations

import pytest
import torch

from grl_conformance import checks as catalogue
from grl_conformance.checks import cuda
from grl_conformance.checks.kit.judge import grads_mismatch, judge_replayed_alpha
from grl_conformance.core.outcome import Failed
from grl_conformance.core.registry import resolve
from grl_conformance.core.runner import run_check


def _grads(alpha: float) -> dict:
    """Linear -> (reversal by alpha) -> Linear, gradients as the capture code collects them."""
    torch.manual_seed(0)
    first, second = torch.nn.Linear(cuda.IN, cuda.HIDDEN), torch.nn.Linear(cuda.HIDDEN, cuda.OUT)
    x, y = torch.randn(cuda.BATCH, cuda.IN), torch.randn(cuda.BATCH, cuda.OUT)
    h = first(x)
    h = h.detach() + (h - h.detach()) * -alpha  # value h, gradient -alpha
    ((second(h) - y).pow(2).mean()).backward()
    return {"0.weight": first.weight.grad, "0.bias": first.bias.grad,
            "2.weight": second.weight.grad, "2.bias": second.bias.grad}


def test_grads_mismatch_names_the_parameter():
    assert grads_mismatch(_grads(0.5), _grads(0.5), cuda.CAPTURED) is None
    off = grads_mismatch(_grads(0.5), _grads(0.5 * 1.001), cuda.CAPTURED)
    assert off and off.startswith("0.weight"), off
    assert "no gradient" in grads_mismatch({}, _grads(0.5), cuda.CAPTURED)


def test_replayed_alpha_follows_frozen_neither():
    new, old = _grads(cuda.ALPHA_AFTER), _grads(cuda.ALPHA_CAPTURED)
    alphas = {"captured": cuda.ALPHA_CAPTURED, "after": cuda.ALPHA_AFTER}
    assert "follows the new alpha" in judge_replayed_alpha(new, new, old, **alphas)
    with pytest.raises(Failed, match="frozen") as frozen:
        judge_replayed_alpha(old, new, old, **alphas)
    assert frozen.value.summary == "alpha frozen"
    with pytest.raises(Failed, match="matches neither"):
        judge_replayed_alpha(_grads(-1.0), new, old, **alphas)


def test_skip_verdict_fails_on_any_skip():
    cuda.skip_verdict(0, [])
    with pytest.raises(Failed, match="mutated inputs") as skipped:
        cuda.skip_verdict(2, ["skipping cudagraphs due to mutated inputs", "skipping cudagraphs due to mutated inputs"])
    assert skipped.value.summary == "2 cudagraph skips"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
@pytest.mark.parametrize("check_id", [c.id for c in catalogue.checks_in("cuda")])
def test_cuda_checks_skip_with_a_reason_on_cpu(check_id):
    outcome = run_check(resolve("grl_conformance.impls.naive_function:IMPL"), catalogue.get(check_id))
    assert outcome.status == "skip" and "CUDA" in outcome.detail, outcome


# --- the capture code paths, dry-run on CPU with CUDA stand-ins ------------------------------

class _FakeGraph:
    """A CUDA graph that captures nothing: replay is a no-op, like a graph whose kernels were
    frozen at capture. The checks must notice (stale gradients, frozen alpha)."""

    def replay(self):
        pass


class _Nothing:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait_stream(self, other):
        pass


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(cuda, "_need_cuda", lambda: torch)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.cuda, "Stream", _Nothing)
    monkeypatch.setattr(torch.cuda, "stream", _Nothing)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _Nothing())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", _Nothing)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda module, args: module)


def _run(check_id):
    from grl_conformance.checks import get

    return run_check(resolve("grl_conformance.impls.naive_function:IMPL"), get(check_id))


def test_dry_run_graph_notices_a_replay_that_does_nothing(fake_cuda):
    outcome = _run("cuda.graph")  # replay 0 equals the capture-time step; replay 1 is stale
    assert outcome.status == "fail" and outcome.detail.startswith("replay 1"), outcome


def test_dry_run_graphed_callables_flow(fake_cuda):
    outcome = _run("cuda.graphed_callables")  # the stand-in runs eagerly: must pass
    assert outcome.status == "pass", outcome


def test_dry_run_alpha_after_capture_reports_a_frozen_alpha(fake_cuda):
    outcome = _run("cuda.alpha_after_capture")  # the no-op replay keeps the captured alpha
    assert outcome.status == "fail" and outcome.summary == "alpha frozen", outcome


def test_dry_run_reduce_overhead_counts_a_skip(fake_cuda):
    """On CPU, inductor never builds CUDA graphs and bumps the skip counter: the whole path
    (three alphas, nine steps compared with eager, then the counter) must end in `fail`.
    Costs one inductor CPU compile (about 10 s on 2 cores)."""
    outcome = _run("cuda.reduce_overhead")
    assert outcome.status == "fail" and "cudagraph skip" in outcome.summary, outcome
