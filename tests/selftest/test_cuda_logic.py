"""The CUDA checks' judging, on CPU tensors (the capture itself needs a GPU)."""
from __future__ import annotations

import pytest
import torch

from harness import checks as catalogue
from harness.checks import cuda
from harness.outcome import Failed
from harness.registry import resolve
from harness.runner import run_check


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


def test_grad_mismatch_names_the_parameter():
    assert cuda.grad_mismatch(_grads(0.5), _grads(0.5)) is None
    off = cuda.grad_mismatch(_grads(0.5), _grads(0.5 * 1.001))
    assert off and off.startswith("0.weight"), off
    assert "no gradient" in cuda.grad_mismatch({}, _grads(0.5))


def test_alpha_verdict_follows_frozen_neither():
    new, old = _grads(cuda.ALPHA_AFTER), _grads(cuda.ALPHA_CAPTURED)
    assert "follows the new alpha" in cuda.alpha_verdict(new, new, old)
    with pytest.raises(Failed, match="frozen") as frozen:
        cuda.alpha_verdict(old, new, old)
    assert frozen.value.summary == "alpha frozen"
    with pytest.raises(Failed, match="matches neither"):
        cuda.alpha_verdict(_grads(-1.0), new, old)


def test_skip_verdict_fails_on_any_skip():
    cuda.skip_verdict(0, [])
    with pytest.raises(Failed, match="mutated inputs") as skipped:
        cuda.skip_verdict(2, ["skipping cudagraphs due to mutated inputs", "skipping cudagraphs due to mutated inputs"])
    assert skipped.value.summary == "2 cudagraph skips"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
@pytest.mark.parametrize("check_id", [c.id for c in catalogue.checks_in("cuda")])
def test_cuda_checks_skip_with_a_reason_on_cpu(check_id):
    outcome = run_check(resolve("impls.naive_function:IMPL"), catalogue.get(check_id))
    assert outcome.status == "skip" and "CUDA" in outcome.detail, outcome
