"""A GRL inside CUDA graphs (docs/checks.md, 'CUDA').

CUDA graphs freeze kernel arguments at capture: a Python-float alpha baked into a captured
backward ignores later `set_alpha`; a device tensor updated in place is read at replay. Capture
breaks on host syncs. Without CUDA every cell is `skip`.

Every replayed gradient is judged against the truth: the same network with the harness's
reference GRL (`grl_conformance.core.reference`), run eagerly, never the implementation's own eager run (a
GRL that never reverses would match itself).

The judging (`grad_mismatch`, `alpha_verdict`, `skip_verdict`) is pure and unit-tested on CPU
(tests/selftest/test_cuda_logic.py); only the capture code needs a GPU.
"""
from __future__ import annotations

from grl_conformance.checks import check
from grl_conformance.checks._common import TOLERANCES, linear_grl_linear
from grl_conformance.core.outcome import Errored, Failed, Outcome, Skipped, passed

CONCERN = "CUDA graphs"  # the advice table's column for this area's checks (core/check.py)

RTOL, ATOL = TOLERANCES["reduction"][:2]  # the captured kernels should be the eager ones
COMPILED_RTOL, COMPILED_ATOL = TOLERANCES["inductor"][:2]  # inductor may fuse and reorder
ALPHA_CAPTURED, ALPHA_AFTER = 0.5, 2.0  # powers of two: exact in any float dtype
BATCH, IN, HIDDEN, OUT = 8, 16, 32, 4


# --- judging (pure; CPU-testable) ------------------------------------------------------------

def grad_mismatch(got: dict, want: dict, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """None when every gradient in `want` is close in `got`; else where and how far it is off."""
    import torch

    for name, w in want.items():
        g = got.get(name)
        if g is None:
            return f"no gradient for {name}"
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"{name}: gradient {tuple(g.shape)} {g.dtype}, expected {tuple(w.shape)} {w.dtype}"
        if not torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            err = ((g - w).abs() / (w.abs() + atol / rtol)).max().item()
            return f"{name}: max rel err {err:.3g} (rtol {rtol:g})"
    return None


def alpha_verdict(replayed: dict, want_after: dict, want_captured: dict,
                  a_captured: float = ALPHA_CAPTURED, a_after: float = ALPHA_AFTER) -> str:
    """After set_alpha(a_after) on a graph captured at a_captured, replay must follow a_after.

    Returns the passing detail; raises Failed for a frozen alpha (silent no-op) or a gradient
    that matches neither alpha.
    """
    off = grad_mismatch(replayed, want_after)
    if off is None:
        return (f"captured at alpha {a_captured:g}, set_alpha({a_after:g}) afterwards: the replayed "
                "gradient follows the new alpha (alpha is read from device memory at replay)")
    if grad_mismatch(replayed, want_captured) is None:
        raise Failed(f"captured at alpha {a_captured:g}, then set_alpha({a_after:g}): the replayed "
                     f"gradient still uses {a_captured:g} (alpha frozen into the graph at capture; "
                     "set_alpha is a silent no-op)", summary="alpha frozen")
    raise Failed(f"after set_alpha({a_after:g}) the replayed gradient matches neither alpha "
                 f"{a_after:g} ({off}) nor the captured {a_captured:g}", summary="wrong grad")


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
        raise Errored(f"capture failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
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
        off = grad_mismatch(_grads(net), _reference_grads(ALPHA_CAPTURED, x, y))
        if off:
            raise Failed(f"replay {i}: {off} against a correct GRL", summary="wrong grad on replay")
    return passed(f"{len(batches)} replays with new inputs match a correct GRL's gradients "
                  f"(rtol {RTOL:g})")


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
                      f"{' '.join(str(exc).split())[:200]}", summary="capture failed") from None
    for i, (x, y) in enumerate(batches):
        net.zero_grad(set_to_none=True)
        _loss(graphed(x), y).backward()
        off = grad_mismatch(_grads(net), _reference_grads(ALPHA_CAPTURED, x, y))
        if off:
            raise Failed(f"call {i}: {off} against a correct GRL", summary="wrong grad")
    return passed(f"{len(batches)} graphed calls match a correct GRL's gradients (rtol {RTOL:g})")


@check("cuda.reduce_overhead")
def cuda_reduce_overhead(impl) -> Outcome:
    """torch.compile(mode='reduce-overhead') must keep CUDA graphs (no skip) and the reversal."""
    from unittest import mock

    torch = _need_cuda()
    from torch._inductor import cudagraph_utils

    from grl_conformance.checks._common import fresh_dynamo

    with fresh_dynamo() as counters:  # clean state in and out, no silent fallback to eager
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
                    off = grad_mismatch(got, _reference_grads(alpha, x, y), COMPILED_RTOL,
                                        COMPILED_ATOL)
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
    return passed(f"{steps} steps over 3 alphas match a correct GRL's gradients (rtol "
                  f"{COMPILED_RTOL:g}); no cudagraph skip; {graphs} dynamo graph(s) compiled")


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
    return passed(alpha_verdict(_grads(net), _reference_grads(ALPHA_AFTER, x, y),
                                _reference_grads(ALPHA_CAPTURED, x, y)))
