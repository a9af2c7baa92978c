"""A GRL inside CUDA graphs (docs/checks.md, 'CUDA').

CUDA graphs freeze kernel arguments at capture: a Python-float alpha baked into a captured
backward ignores later `set_alpha`; a device tensor updated in place is read at replay. Capture
breaks on host syncs. Without CUDA every cell is `skip`.

Every replayed gradient is judged against the truth: the same network with the harness's
reference GRL (`grl_conformance.core.reference`), run eagerly, never the implementation's own eager run (a
GRL that never reverses would match itself).

The judging is the kit's (`kit.judge.grads_mismatch`, `judge_replayed_alpha`; tolerance
"reduction", "inductor" once inductor fused the step) and `skip_verdict` here, all pure and
unit-tested on CPU (tests/selftest/test_cuda_logic.py); only the capture code needs a GPU.
"""
from __future__ import annotations

from grl_conformance.checks import check
from grl_conformance.checks.kit.judge import grads_mismatch, judge_replayed_alpha
from grl_conformance.checks.kit.models import linear_grl_linear
from grl_conformance.core.outcome import Errored, Failed, Outcome, Skipped, one_line, passed
from grl_conformance.core.tolerances import tolerance

CONCERN = "CUDA graphs"  # the advice table's column for this area's checks (core/check.py)

CAPTURED = "reduction"  # the tolerance of a replay: the captured kernels should be the eager ones
COMPILED = "inductor"  # under reduce-overhead inductor may fuse and reorder
ALPHA_CAPTURED, ALPHA_AFTER = 0.5, 2.0  # powers of two: exact in any float dtype
BATCH, IN, HIDDEN, OUT = 8, 16, 32, 4


# --- the skip verdict (pure; CPU-testable) --------------------------------------------------------

def skip_verdict(skips: int, reasons: list[str]) -> None:
    """reduce-overhead that silently skips CUDA graphs is `fail` (see docs/distributed.md)."""
    if skips:
        why = "; ".join(dict.fromkeys(" ".join(r.split()) for r in reasons)) or "reason not logged"
        raise Failed(f"torch.compile(mode='reduce-overhead') skipped CUDA graphs {skips} time(s): "
                     f"{why}", summary=f"{skips} cudagraph skip" + ("s" if skips > 1 else ""))


# --- capture (needs CUDA) ----------------------------------------------------------------------

def _need_cuda():
    import torch

    if not torch.cuda.is_available():
        raise Skipped("no CUDA device (torch.cuda.is_available() is False)")
    return torch


def _net(layer, seed: int = 0):
    """The kit's Linear -> layer -> Linear (IN -> HIDDEN -> OUT) on cuda; the same weights for
    the same seed, whatever the layer."""
    return linear_grl_linear(layer, seed, (IN, HIDDEN, OUT)).cuda()


def _model(impl, alpha: float, seed: int = 0):
    """The network around the implementation's layer, and the layer."""
    layer = impl.api.layer(alpha=alpha)
    return _net(layer, seed), layer


def _batches(n: int = 3):
    import torch

    g = torch.Generator().manual_seed(7)
    return [(torch.randn(BATCH, IN, generator=g).cuda(), torch.randn(BATCH, OUT, generator=g).cuda())
            for _ in range(n)]


def _loss(out, y):
    return (out - y).pow(2).mean()


def _grads(net) -> dict:
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def _reference_grads(alpha: float, x, y) -> dict:
    """The truth: parameter gradients of the same network with the reference GRL, eager."""
    from grl_conformance.core.reference import ReferenceGRL

    net = _net(ReferenceGRL(alpha))
    _loss(net(x), y).backward()
    return _grads(net)


def _capture(net, static_x, static_y):
    """Whole-step capture as the torch.cuda.graph docs do it: warm up on a side stream first."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            net.zero_grad(set_to_none=True)
            _loss(net(static_x), static_y).backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    net.zero_grad(set_to_none=True)
    try:
        with torch.cuda.graph(graph):
            static_loss = _loss(net(static_x), static_y)
            static_loss.backward()
    except Exception as exc:  # noqa: BLE001 - a capture failure is the finding
        raise Errored(f"capture failed: {type(exc).__name__}: {one_line(exc, 200)}",
                      summary="capture failed") from None
    return graph


@check("cuda.graph")
def cuda_graph(impl) -> Outcome:
    """A captured forward+backward (torch.cuda.graph) must replay a correct GRL's gradients."""
    torch = _need_cuda()
    net, _ = _model(impl, ALPHA_CAPTURED)
    batches = _batches()
    static_x, static_y = (t.clone() for t in batches[0])
    graph = _capture(net, static_x, static_y)
    for i, (x, y) in enumerate(batches):
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        torch.cuda.synchronize()
        off = grads_mismatch(_grads(net), _reference_grads(ALPHA_CAPTURED, x, y), CAPTURED,
                             nan_equal=True)
        if off:
            raise Failed(f"replay {i}: {off} against a correct GRL", summary="wrong grad on replay")
    return passed(f"{len(batches)} replays with new inputs match a correct GRL's gradients "
                  f"({tolerance(CAPTURED).text()})")


@check("cuda.graphed_callables")
def cuda_graphed_callables(impl) -> Outcome:
    """torch.cuda.make_graphed_callables of a module holding the GRL must reverse correctly."""
    torch = _need_cuda()
    net, _ = _model(impl, ALPHA_CAPTURED)
    batches = _batches()
    try:
        graphed = torch.cuda.make_graphed_callables(net, (batches[0][0].clone(),))
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"make_graphed_callables failed: {type(exc).__name__}: "
                      f"{one_line(exc, 200)}", summary="capture failed") from None
    for i, (x, y) in enumerate(batches):
        net.zero_grad(set_to_none=True)
        _loss(graphed(x), y).backward()
        off = grads_mismatch(_grads(net), _reference_grads(ALPHA_CAPTURED, x, y), CAPTURED,
                             nan_equal=True)
        if off:
            raise Failed(f"call {i}: {off} against a correct GRL", summary="wrong grad")
    return passed(f"{len(batches)} graphed calls match a correct GRL's gradients ({tolerance(CAPTURED).text()})")


@check("cuda.reduce_overhead")
def cuda_reduce_overhead(impl) -> Outcome:
    """torch.compile(mode='reduce-overhead') must keep CUDA graphs (no skip) and the reversal."""
    from unittest import mock

    torch = _need_cuda()
    from torch._inductor import cudagraph_utils

    from grl_conformance.core import compat

    with compat.fresh_dynamo() as counters:  # clean state in and out, no silent fallback to eager
        net, layer = _model(impl, 1.0)
        compiled = torch.compile(net, mode="reduce-overhead")
        batches = _batches()
        steps = 0
        log = cudagraph_utils.cudagraphs_log  # every skip is logged here and counted
        with mock.patch.object(log, "warning", wraps=log.warning) as logged:
            for alpha in (ALPHA_CAPTURED, ALPHA_AFTER, 0.25):
                layer.set_alpha(alpha)
                for x, y in batches:  # warm-up, record, replay under cudagraph trees
                    torch.compiler.cudagraph_mark_step_begin()
                    net.zero_grad(set_to_none=True)
                    _loss(compiled(x), y).backward()
                    got = _grads(net)
                    off = grads_mismatch(got, _reference_grads(alpha, x, y), COMPILED,
                                         nan_equal=True)
                    if off:
                        raise Failed(f"alpha {alpha:g}, step {steps}: {off} against a correct GRL",
                                     summary="wrong grad")
                    steps += 1
        reasons = [str(c.args[0]) % c.args[1:] if len(c.args) > 1 else str(c.args[0])
                   for c in logged.call_args_list if c.args]
        skip_verdict(int(counters["inductor"]["cudagraph_skips"]), reasons)
        graphs = int(counters["stats"]["unique_graphs"])
    if not graphs:
        raise Errored("torch.compile compiled no graph: the model ran eagerly", summary="not compiled")
    return passed(f"{steps} steps over 3 alphas match a correct GRL's gradients "
                  f"({tolerance(COMPILED).text()}); no cudagraph skip; {graphs} dynamo graph(s) compiled")


@check("cuda.alpha_after_capture")
def cuda_alpha_after_capture(impl) -> Outcome:
    """After capture, set_alpha must change the replayed gradient (a frozen alpha is a silent no-op)."""
    torch = _need_cuda()
    net, layer = _model(impl, ALPHA_CAPTURED)
    (x, y), = _batches(1)
    static_x, static_y = x.clone(), y.clone()
    graph = _capture(net, static_x, static_y)
    layer.set_alpha(ALPHA_AFTER)
    graph.replay()
    torch.cuda.synchronize()
    return passed(judge_replayed_alpha(_grads(net), _reference_grads(ALPHA_AFTER, x, y),
                                       _reference_grads(ALPHA_CAPTURED, x, y),
                                       captured=ALPHA_CAPTURED, after=ALPHA_AFTER))
