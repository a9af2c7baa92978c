"""torch.compile semantics of a GRL (docs/checks.md, 'Compile').

Every column judges against the truth: the same model run eagerly with the harness's trusted
GRL (`grl_conformance.core.reference`). Equality with the implementation's own eager run is asked second
(bitwise for the eager and aot_eager backends), and the detail says how a wrong compiled result
relates to it ("its own eager run is wrong the same way"): a GRL that never reverses fails
here just as in eager.

Every check here starts from a clean dynamo state (`torch._dynamo.reset()`), so a cell can
never reuse another cell's graphs or guards, and runs with
`torch._dynamo.config.fail_on_recompile_limit_hit = True` (`fail_on_cache_limit_hit` on torch 2.6;
core/compat.py; patched, so it is restored):
hitting the recompile limit would otherwise fall back to eager silently and pass vacuously.
Graphs are counted with dynamo's `unique_graphs` statistic (the backend is wrapped in
`CompileCounterWithBackend` to see that anything compiled at all), graph breaks come from
`torch._dynamo.utils.counters`. The implementation's own eager step runs first, so a model that fails
in eager reads `eager error`, not a compile problem. The three backend columns compile with
`fullgraph=True`; the alpha schedule does not, so a graph-breaking GRL still has its
gradients compared step by step (its breaks go into detail and summary).

Cost: the model is Linear(4, 4) -> GRL -> Linear(4, 2) on a 3 x 4 input. Only
`compile.inductor` and `compile.fusion` run inductor (its FX graph cache stays enabled, so a
warm cache turns a compile into a load); the alpha schedule and dynamic-shape checks use
`aot_eager`, which runs dynamo and AOTAutograd (where guards, recompiles and the traced
backward live) without paying for code generation.
"""
from __future__ import annotations

import functools
import math
import re

import torch
from torch import nn

from grl_conformance.checks import check
from grl_conformance.checks.eager.contexts import checkpoint_check
from grl_conformance.checks.kit.hooks import grad_under_hooks, offload_hooks
from grl_conformance.checks.kit.inputs import ALPHA, ALPHA_AFTER, OFFLOAD_ALPHA, sample_inputs
from grl_conformance.checks.kit.judge import (
    close,
    judge_alpha_after,
    judge_step,
    judge_under_hooks,
    max_diff,
    raised,
)
from grl_conformance.checks.kit.models import (
    impl_model,
    linear_grl_linear,
    reference_model,
    reference_step,
    step,
    unreversed_step,
)
from grl_conformance.core import compat
from grl_conformance.core.outcome import (
    Errored,
    Failed,
    NotApplicable,
    Skipped,
    describe_exception,
    one_line,
    passed,
)
from grl_conformance.core.reference import ReferenceGRL
from grl_conformance.core.tolerances import tolerance

CONCERN = "compile"  # the advice table's column for this area's checks (core/check.py)


def _counter(backend):
    from torch._dynamo.testing import CompileCounterWithBackend

    return CompileCounterWithBackend(backend)


def _graphs(counter, counters) -> int:
    """Graphs dynamo compiled: `unique_graphs`. The backend call count overcounts: when a
    recompile restarts its analysis the backend may also be handed an empty graph (measured on
    2.13: 3 backend calls, 2 unique graphs, for one dtype-change recompile)."""
    return int(counters["stats"].get("unique_graphs", 0)) or counter.frame_count


def _breaks(counters) -> str:
    reasons = dict(counters.get("graph_break", {}))
    if not reasons:
        return "no graph breaks"
    return f"{sum(reasons.values())} graph breaks: " + "; ".join(
        one_line(r, 160) for r in list(reasons)[:3])


def _explain(model, x) -> str:
    """Why fullgraph failed: graph count and break reasons from `torch._dynamo.explain`."""
    try:
        torch._dynamo.reset()
        report = torch._dynamo.explain(model)(x.detach().clone().requires_grad_(True))
        reasons = "; ".join(" ".join(str(getattr(b, "reason", b)).split()[:12])
                            for b in report.break_reasons[:3])
        return f"without fullgraph: {report.graph_count} graphs, {report.graph_break_count} breaks" + (
            f" ({reasons})" if reasons else "")
    except Exception as exc:  # noqa: BLE001 - explain is only for the detail
        return f"explain failed: {type(exc).__name__}: {one_line(exc, 120)}"
    finally:
        torch._dynamo.reset()


def _compile_error(exc: BaseException, model, x) -> Errored:
    """An exception raised while compiling or running the compiled model, classified."""
    from torch._dynamo import exc as dynamo_exc

    message = " ".join(str(exc).split()).lower()
    head = describe_exception(exc)
    cause = exc.__cause__
    said = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    if said and said not in head:
        head += f" (caused by {describe_exception(cause)})"
    if isinstance(exc, getattr(dynamo_exc, "FailOnRecompileLimitHit", ())) or (
            "recompile" in message and "limit" in message):
        return Errored(f"recompile limit hit ({head})", summary="recompile limit")
    if isinstance(exc, (dynamo_exc.Unsupported, dynamo_exc.UserError)):
        gb = compat.graph_break_id(exc)
        return Errored(f"fullgraph=True raised {head}. {_explain(model, x)}"
                       + (f". {gb}" if gb else ""), summary="graph break")
    if isinstance(exc, dynamo_exc.TorchRuntimeError):
        text = " ".join(str(exc).split())
        got = text.find(": got ")  # "Dynamo failed to run FX node with fake tensors: ... got Error(...)"
        if got >= 0:
            head += f" ({text[got + 2:got + 260]})"
        return Errored(f"tracing raised {head}", summary="trace error")
    return Errored(f"compiled run raised {head}", summary="compile error")


def _eager_step(model, x, upstream, where: str = ""):
    """The eager reference step; if eager itself raises, the cell says so (not a compile problem)."""
    try:
        return step(model, model, x, upstream)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"{where + ': ' if where else ''}the eager model itself raises "
                      f"{describe_exception(exc)}", summary="eager error") from None


def _fullgraph(impl, backend: str, *, bitwise: bool):
    """Compile Linear -> GRL -> Linear with `fullgraph=True`, two steps; judge each against the
    reference GRL's eager step, then against the implementation's own eager step."""
    model = impl_model(impl)
    inputs = [sample_inputs(), sample_inputs(seed=2)]
    truth = [reference_step(x, upstream) for x, upstream in inputs]
    eager = [_eager_step(model, x, upstream) for x, upstream in inputs]
    with compat.fresh_dynamo() as counters:
        counter = _counter(backend)
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        try:
            got = [step(compiled, model, x, upstream) for x, upstream in inputs]
        except Exception as exc:  # noqa: BLE001 - the reason is the finding
            raise _compile_error(exc, model, inputs[0][0]) from None
        if counter.frame_count == 0:
            raise Failed("dynamo compiled nothing: the forward ran eager", summary="not compiled")
        breaks = _breaks(counters)
        frames, ops = _graphs(counter, counters), counter.op_count
        for i, (g, t, e) in enumerate(zip(got, truth, eager, strict=True)):
            judge_step(g, t, where=f"step {i + 1}", what=f"the compiled ({backend}) run", own_eager=e,
                       unreversed=unreversed_step(*inputs[i]), bitwise_eager=bitwise)
        followed = judge_alpha_after(
            lambda: step(compiled, model, *inputs[0]), reference_step(*inputs[0], alpha=ALPHA_AFTER),
            truth[0], where="the compiled model", layer=model[1], made_with=ALPHA,
            verb="the compiled graph")
        later = _graphs(counter, counters) - frames
    recompiles = frames - 1
    summary = f"{frames} graphs" if frames > 1 else ""
    return passed(f"fullgraph {backend}: {frames} graph(s) for 2 steps ({ops} ops captured), {breaks}; "
                  f"output and all gradients equal a correct GRL's ({tolerance('graph').text()}) and "
                  f"{'bitwise ' if bitwise else ''}its own eager run's"
                  + (f"; {recompiles} recompile(s) for a second input of the same shape" if recompiles else "")
                  + f"; {followed} ({later} more graph(s))",
                  summary=summary)


@check("compile.eager")
def compile_eager(impl):
    """Dynamo must capture the GRL in one graph (fullgraph) with eager-identical results."""
    return _fullgraph(impl, "eager", bitwise=True)


@check("compile.aot_eager")
def compile_aot_eager(impl):
    """AOTAutograd must trace the GRL's backward into the graph and keep it bitwise equal to eager."""
    return _fullgraph(impl, "aot_eager", bitwise=True)


@check("compile.inductor")
def compile_inductor(impl):
    """The default backend must compile the GRL in one graph with gradients equal to eager."""
    _require_inductor()
    return _fullgraph(impl, "inductor", bitwise=False)


def _compiled_func(impl, name: str, build, truth_of):
    """torch.compile(<a torch.func transform of the GRL>, fullgraph=True) on eager, aot_eager
    and (where it compiles here) inductor, judged against -alpha times what it transforms."""
    from torch._dynamo.testing import CompileCounterWithBackend

    alpha = 0.5
    layer = impl.api.layer(alpha=alpha)
    gen = torch.Generator().manual_seed(41)
    x, c = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    fn = build(layer, c)
    want, unreversed = truth_of(alpha, c)
    try:
        eager = fn(x)
    except Exception as exc:  # noqa: BLE001 - not this column's question: the eager one's
        raise Errored(f"torch.func.{name} itself raises in eager {describe_exception(exc)} "
                      f"(func.{name}'s cell)", summary="eager error") from None
    backends = ["eager", "aot_eager"] + (["inductor"] if _inductor_compiles() else [])
    notes = []
    for backend in backends:
        with compat.fresh_dynamo():
            counter = CompileCounterWithBackend(backend)
            try:
                compiled = torch.compile(fn, backend=counter, fullgraph=True)
                got = compiled(x)
            except Exception as exc:  # noqa: BLE001 - the reason is the finding
                err = _compile_error(exc, layer, x)
                raise Errored(f"{backend}: {err.detail}", summary=err.summary) from None
            if close(got, want, "one_op"):
                followed = judge_alpha_after(
                    lambda f=compiled: f(x), truth_of(ALPHA_AFTER, c)[0], want,
                    where=f"compiled ({backend}) torch.func.{name}", layer=layer, made_with=alpha,
                    verb="the compiled graph")
        if counter.frame_count == 0:
            raise Failed(f"{backend}: dynamo compiled nothing", summary="not compiled")
        right_eager = close(eager, want, "one_op")
        if close(got, unreversed, "one_op"):
            raise Failed(f"compiled ({backend}) torch.func.{name} returns the unreversed result, "
                         f"not -alpha times it: the reversal lost (its eager torch.func.{name} "
                         f"{'is right' if right_eager else 'is wrong too'})", summary="reversal lost")
        if not close(got, want, "one_op"):
            diff = (got - want).abs().max().item()
            raise Failed(f"compiled ({backend}) torch.func.{name} differs from the right result "
                         f"(max |diff| {diff:.3g}, alpha {alpha})", summary="wrong result")
        notes.append(f"{backend} {counter.frame_count} graph(s)")
    return passed(f"torch.compile(torch.func.{name}(...), fullgraph=True) equals -alpha times the "
                  f"unreversed result (alpha {alpha}): {', '.join(notes)}; {followed}")


@check("compile.func_grad", control="composite")
def compile_func_grad(impl):
    """torch.compile(torch.func.grad(f), fullgraph=True): dynamo has inlined a Function's forward
    and dropped its custom backward without an error (a GRL then returns +1, not -alpha)."""
    def build(layer, c):
        return torch.func.grad(lambda t: (layer(t) * c).sum())

    return _compiled_func(impl, "grad", build, lambda a, c: (-a * c, c))


@check("compile.func_jvp", control="composite")
def compile_func_jvp(impl):
    """torch.compile of torch.func.jvp through the GRL: the tangent must come out -alpha * t."""
    def build(layer, c):
        return lambda t: torch.func.jvp(layer, (t,), (c,))[1]

    return _compiled_func(impl, "jvp", build, lambda a, c: (-a * c, c))


def dann_alpha(p: float) -> float:
    """Ganin et al. 2016: alpha_p = 2 / (1 + exp(-10 p)) - 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def alpha_schedule_values(steps: int = 12) -> list:
    """The DANN schedule as users feed it: Python floats, then np.float64, then np.float32."""
    import numpy as np

    kinds = (float, np.float64, np.float32)
    per = math.ceil(steps / len(kinds))
    return [kinds[i // per](dann_alpha(i / (steps - 1))) for i in range(steps)]


@check("compile.compiled_autograd")
def compile_compiled_autograd(impl):
    """Compiled autograd (the backward traced and compiled as a graph), after an eager forward,
    after a compiled one, and with both on inductor, over an alpha schedule: a GRL's backward
    must trace and keep -alpha; backward recompiles per alpha change are counted."""
    alphas = (0.1, 0.5, 0.9, 0.3)
    x0, upstream = sample_inputs()

    def grads(layer, forward_backend=None, backward_backend=None):
        model = linear_grl_linear(layer)
        run = model if forward_backend is None else torch.compile(model, backend=forward_backend)
        calls = {"n": 0}

        def compiler(gm):
            calls["n"] += 1
            return torch.compile(gm, backend=backward_backend, fullgraph=True)

        out = []
        for a in alphas:
            layer.set_alpha(a)
            x = x0.detach().clone().requires_grad_(True)
            y = run(x)
            if backward_backend is not None:
                with compat.compiled_autograd(compiler):
                    y.backward(upstream)
            else:
                y.backward(upstream)
            out.append(x.grad)
        return out, calls["n"]

    want, _ = grads(ReferenceGRL(1.0))
    cases = [("eager forward, backward compiled on eager", None, "eager"),
             ("aot_eager forward, backward compiled on eager", "aot_eager", "eager")]
    if _inductor_compiles():
        cases.append(("inductor forward, backward compiled on inductor", "inductor", "inductor"))
    notes, most = [], 0
    for label, forward, backward in cases:
        with compat.fresh_dynamo(), compat.no_aot_autograd_cache():
            try:
                got, graphs = grads(impl.api.layer(alpha=1.0), forward, backward)
            except Exception as exc:  # noqa: BLE001 - the reason is the finding
                err = _compile_error(exc, impl_model(impl), x0)
                raise Errored(f"{label}: {err.detail}", summary=err.summary) from None
        for i, (g, w, a) in enumerate(zip(got, want, alphas, strict=True)):
            if not close(g, w, "reduction"):
                lost = close(g, -w / a, "reduction")
                raise Failed(f"{label}, step {i} (alpha {a}): the input "
                             f"gradient is not a correct GRL's"
                             + ("; it is the unreversed gradient: reversal lost" if lost else ""),
                             summary="reversal lost" if lost else "wrong grad")
        notes.append(f"{label}: {graphs} backward graph(s) for {len(alphas)} alphas")
        most = max(most, graphs)
    if len(cases) < 3:
        notes.append(INDUCTOR_NOT_RUN)
    recompiles = max(0, most - 1)  # the most of any case
    return passed(f"compiled autograd (backward compiled by dynamo, fullgraph) over alphas "
                  f"{', '.join(map(str, alphas))}: input gradients equal a correct GRL's; "
                  f"{'; '.join(notes)}",
                  summary=f"{recompiles} backward recompile{'s' if recompiles != 1 else ''}")


@check("compile.offload")
def compile_offload(impl):
    """Saved-tensor hooks around a compiled model (fullgraph, aot_eager and inductor): under
    `save_on_cpu` the input gradient must be the reference GRL's under the same hooks, exactly;
    under a compressing hook, up to bfloat16's rounding of alpha (once compiled, torch's
    partitioner, not the GRL, decides whether alpha is saved through autograd)."""
    alpha = OFFLOAD_ALPHA
    hooks = offload_hooks()
    truth = {label: grad_under_hooks(reference_model(alpha).double(), make)[0]
             for label, _, make in hooks}
    backends = ["aot_eager"] + (["inductor"] if _inductor_compiles() else [])
    notes, rounded, most = [], [], 0
    for backend in backends:
        with compat.fresh_dynamo():  # what the compiled reference packs: the bytes a GRL adds to it
            reference = torch.compile(reference_model(alpha).double(), backend=backend, fullgraph=True)
            ref_bytes = {label: grad_under_hooks(reference, make)[1] for label, _, make in hooks}
        if not any(ref_bytes.values()):
            raise Skipped(f"{backend}: the compiled reference model packed nothing under "
                          "saved-tensor hooks (the hooks are not applied under compile here)")
        with compat.fresh_dynamo():
            model = impl_model(impl, alpha).double()
            try:
                compiled = torch.compile(model, backend=backend, fullgraph=True)
                gots = [grad_under_hooks(compiled, make) for _, _, make in hooks]
            except Exception as exc:  # noqa: BLE001 - the reason is the finding
                err = _compile_error(exc, model, sample_inputs()[0].double())
                raise Errored(f"{backend}: {err.detail}", summary=err.summary) from None
        for (label, lossy, _), (got, got_bytes) in zip(hooks, gots, strict=True):
            extra = max(0, got_bytes - ref_bytes[label])
            most = max(most, extra)
            where = f"{backend} under {label}"
            note = judge_under_hooks(got, truth[label], alpha, where=where, packed=extra,
                                     lossy=lossy, rounding_ok=True)
            if note:
                rounded.append(note)
            notes.append(f"{where} packs {extra} B")
    skipped = "" if "inductor" in backends else f"; {INDUCTOR_NOT_RUN}"
    return passed(f"torch.compile fullgraph, float64 model, alpha {alpha}: input gradient equals "
                  f"the eager reference GRL's under the same hooks; {'; '.join(notes)} beyond the "
                  f"compiled reference's" + "".join(f"; {n}" for n in rounded) + skipped,
                  summary=f"packs {most} B" + (", alpha rounded" if rounded else ""))


@check("compile.alpha_schedule", control="composite")  # a float alpha recompiles per value on 2.6
def compile_alpha_schedule(impl):
    """set_alpha between compiled steps must give a correct GRL's gradient at every step (and
    its own eager run's, bitwise).

    Not fullgraph (the fullgraph columns already ask for one graph): a GRL that graph-breaks
    still runs its schedule here, so a wrong or NaN gradient after a coefficient change shows
    as `fail` rather than hiding behind a break error; the breaks go into detail and summary.
    A recompile is a graph compiled after the first step.
    """
    alphas = alpha_schedule_values()
    model = impl_model(impl, alpha=alphas[0])
    layer = model[1]
    x, upstream = sample_inputs()
    reference = reference_model(float(alphas[0]))
    graphs_at = []
    with compat.fresh_dynamo() as counters:
        counter = _counter("aot_eager")
        compiled = torch.compile(model, backend=counter)
        for i, alpha in enumerate(alphas):
            where = f"step {i} (alpha={float(alpha):.4g} as {type(alpha).__name__})"
            try:
                layer.set_alpha(alpha)
            except Exception as exc:  # noqa: BLE001 - users write NumPy floats
                raise Errored(f"{where}: set_alpha raised {describe_exception(exc)}",
                              summary="set_alpha error") from None
            eager = _eager_step(model, x, upstream, where)
            reference[1].set_alpha(float(alpha))
            truth = step(reference, reference, x, upstream)
            try:
                got = step(compiled, model, x, upstream)
            except Exception as exc:  # noqa: BLE001
                err = _compile_error(exc, model, x)
                raise Errored(f"{where}: {err.detail} (after {_graphs(counter, counters)} graphs)",
                              summary=err.summary) from None
            graphs_at.append(_graphs(counter, counters))
            try:
                judge_step(got, truth, where=where, what="the compiled (aot_eager) run", own_eager=eager,
                           unreversed=unreversed_step(x, upstream), bitwise_eager=True)
            except Failed as failed:
                raise Failed(f"{failed.detail}; graphs so far: {graphs_at}; {_breaks(counters)}",
                             summary=f"wrong at step {i}") from None
        if counter.frame_count == 0:
            raise Failed("dynamo compiled nothing: the forward ran eager", summary="not compiled")
        breaks = _breaks(counters)
        n_breaks = sum(dict(counters.get("graph_break", {})).values())
    recompiles = graphs_at[-1] - graphs_at[0]
    where = [i for i in range(1, len(graphs_at)) if graphs_at[i] != graphs_at[i - 1]]
    summary = f"{recompiles} recompile{'s' if recompiles != 1 else ''}"
    if n_breaks:
        summary += f", {n_breaks} break{'s' if n_breaks != 1 else ''}"
    return passed(f"{len(alphas)} DANN alphas (4 float, 4 np.float64, 4 np.float32; aot_eager): "
                  f"gradients equal a correct GRL's ({tolerance('graph').text()}) and bitwise its own eager run's at "
                  f"every step; {recompiles} recompile(s)"
                  + (f" at steps {where}" if where else "") + f" (graphs after each step {graphs_at}); {breaks}",
                  summary=summary)


DYNAMIC_BATCHES = (2, 3, 5, 8, 13)


@check("compile.dynamic_shapes")
def compile_dynamic_shapes(impl):
    """Varying batch sizes must cost at most one recompile (automatic dynamic) with correct gradients."""
    model = impl_model(impl)
    frames_at = []
    with compat.fresh_dynamo() as counters:
        counter = _counter("aot_eager")
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for batch in DYNAMIC_BATCHES:
            x, upstream = sample_inputs(batch)
            eager = _eager_step(model, x, upstream, f"batch {batch}")
            truth = reference_step(x, upstream)
            try:
                got = step(compiled, model, x, upstream)
            except Exception as exc:  # noqa: BLE001
                err = _compile_error(exc, model, x)
                raise Errored(f"batch {batch}: {err.detail}", summary=err.summary) from None
            frames_at.append(_graphs(counter, counters))
            judge_step(got, truth, where=f"batch {batch}", what="the compiled (aot_eager) run",
                       own_eager=eager, unreversed=unreversed_step(x, upstream), bitwise_eager=True)
    recompiles = frames_at[-1] - 1
    detail = (f"batch sizes {list(DYNAMIC_BATCHES)} (aot_eager, fullgraph): graphs after each "
              f"{frames_at}, {recompiles} recompile(s)")
    summary = f"{recompiles} recompile{'s' if recompiles != 1 else ''}"
    if recompiles > 1:
        raise Failed(detail + "; more than one: the GRL specializes on the batch size", summary=summary)
    return passed(detail + f"; gradients equal a correct GRL's ({tolerance('graph').text()}) and bitwise its own "
                  "eager run's", summary=summary)


class _Pointwise(nn.Module):
    """sin -> layer -> cos: everything pointwise, so a traceable GRL can fuse completely."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return torch.cos(self.layer(torch.sin(x)))


def _pointwise_inputs():
    return (torch.linspace(-2.0, 2.0, 16, dtype=torch.float32),
            torch.linspace(0.5, 1.5, 16, dtype=torch.float32))


def _pointwise_reference_grad() -> torch.Tensor:
    """The truth for `_inductor_kernels`: the input gradient with the reference GRL, eager."""
    x, upstream = _pointwise_inputs()
    x.requires_grad_(True)
    _Pointwise(ReferenceGRL(ALPHA))(x).backward(upstream)
    return x.grad


def _inductor_kernels(layer: nn.Module):
    """Kernels inductor generates for forward + backward of `_Pointwise(layer)`, and the grad.

    Counted with `torch._inductor.metrics.generated_kernel_count` after `metrics.reset()`. It is
    robust to the FX graph cache: a cache hit replays the metric deltas stored with the
    compiled graph (`CachedMetricsHelper`), so a warm cache gives the same count as a cold
    compile (measured: 2 and 2). Counting kernels in `run_and_get_code` source would depend
    on the code generator's text layout; the metric is what inductor itself reports.
    """
    from torch._inductor import metrics

    x, upstream = _pointwise_inputs()
    module = _Pointwise(layer)
    xe = x.clone().requires_grad_(True)
    try:
        module(xe).backward(upstream)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"the eager sin -> GRL -> cos graph itself raises {describe_exception(exc)}",
                      summary="eager error") from None
    with compat.fresh_dynamo():
        metrics.reset()
        compiled = torch.compile(module, backend="inductor", fullgraph=True)
        xc = x.clone().requires_grad_(True)
        compiled(xc).backward(upstream)
        count = metrics.generated_kernel_count
        metrics.reset()
    return count, xc.grad, xe.grad


class _Identity(nn.Module):
    def forward(self, x):
        return x


@functools.lru_cache(maxsize=1)
def _inductor_probe() -> tuple[int | None, str]:
    """Kernel count of the graph with an identity in place of the GRL, once per process.

    It doubles as the probe whether inductor can compile at all here (CPU inductor needs a
    C++ compiler): if this plain graph fails, inductor cells are `skip`, not the GRL's error.
    """
    try:
        return _inductor_kernels(_Identity())[0], ""
    except compat.HarnessGap:
        raise  # the harness's own gap on this torch: the column's control says so, not a skip
    except Exception as exc:  # noqa: BLE001 - sorted below
        if not _lacks_a_compiler(exc):
            raise  # anything else is no fact about the machine: the cell (and control) errors
        return None, f"{type(exc).__name__}: {one_line(exc, 160)}"


# What inductor raises when the machine has no working C++ compiler (its exception classes, then
# the words of its own message): only these make an inductor cell a skip.
_NO_COMPILER_TYPES = ("InvalidCxxCompiler", "CppCompileError")
_NO_COMPILER_WORDS = re.compile(r"C\+\+ compiler|no such file or directory: '?(g\+\+|c\+\+|clang)",
                                re.IGNORECASE)


def _lacks_a_compiler(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the machine cannot build inductor's C++ code."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _NO_COMPILER_TYPES or _NO_COMPILER_WORDS.search(str(exc)):
            return True
        exc = exc.__cause__ or getattr(exc, "inner_exception", None) or exc.__context__
    return False


INDUCTOR_NOT_RUN = "inductor not run (it cannot compile here)"


def _inductor_compiles() -> bool:
    """Whether inductor compiles here: columns that run it beside other backends leave it out
    where it does not (and say so), rather than skip the whole cell."""
    return _inductor_probe()[0] is not None


def _require_inductor() -> int:
    count, problem = _inductor_probe()
    if count is None:
        raise Skipped(f"inductor cannot compile a plain sin -> cos graph on this machine ({problem})")
    return count


@check("compile.fusion")
def compile_fusion(impl):
    """A traceable GRL fuses into its neighbours' kernels, an opaque one costs extra kernels; and
    the fused graph must still reverse (a schema that lies about aliasing misleads inductor)."""
    baseline = _require_inductor()
    layer = impl.api.layer(alpha=ALPHA)
    x = torch.zeros(16, requires_grad=True)
    try:
        count, grad, eager = _inductor_kernels(layer)
    except Errored:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _compile_error(exc, _Pointwise(layer), x) from None
    truth = _pointwise_reference_grad()
    if grad is None or not close(grad, truth):
        if eager is not None and close(eager, truth):
            parity = "its own eager run is right: inductor changed it"
        elif grad is not None and eager is not None and close(grad, eager):
            parity = "its own eager run is wrong the same way"
        else:
            parity = "its own eager run is wrong too, differently"
        raise Failed(f"sin -> GRL -> cos: the inductor-compiled input gradient differs from a "
                     f"correct GRL's ({max_diff(grad, truth)}, {tolerance('graph').text()}); {parity}",
                     summary="wrong gradient")
    if eager is None or not close(grad, eager):
        raise Failed(f"sin -> GRL -> cos: the inductor-compiled input gradient is right but differs "
                     f"from its own eager run ({max_diff(grad, eager, 'eager')})",
                     summary="differs from eager")
    extra = count - baseline
    summary = f"{extra:+d} kernel{'s' if abs(extra) != 1 else ''}"
    detail = (f"sin -> GRL -> cos, forward + backward under inductor: {count} generated kernels, "
              f"{baseline} with an identity in its place ({summary}); the input gradient equals a "
              f"correct GRL's and its own eager run's")
    # Extra kernels are a cost, not a wrong result: the cell passes and the count shows it.
    how = "fused away" if extra <= 0 else "not fused into its neighbours (opaque to inductor)"
    return passed(f"{detail}: {how}", summary=summary)


# --- contexts real training adds: checkpointing under torch.compile (docs/contexts.md) --------

@check("checkpoint.compiled")
def checkpoint_compiled(impl):
    """Non-reentrant checkpointing of the GRL's branch under torch.compile (aot_eager) keeps the reversal."""
    return checkpoint_check(impl, reentrant=False, compile_ctx=compat.fresh_dynamo)


# --- the op registration torch.compile relies on -----------------------------------------------

# Namespaces of ops that ship with torch: anything else was registered through torch.library.
TORCH_NAMESPACES = {"aten", "prim", "prims", "profiler", "_c10d_functional", "c10d", "c10d_functional",
                    "_dtensor", "quantized", "_quantized", "debugprims", "inductor", "higher_order",
                    "_nested_tensor", "rngprims", "mkldnn", "mkl", "onednn", "xnnpack", "_test"}


def custom_ops_called(impl) -> dict:
    """Every torch.library op the GRL dispatches in forward and backward, with its first arguments.

    A `TorchDispatchMode` sits below autograd, so it sees the op an autograd kernel (custom_op's
    `register_autograd`, a C++ `TORCH_LIBRARY` autograd impl or an `autograd.Function`)
    redispatches to, whatever Python object the implementation exposes or hides. That is
    more general than looking for an `OpOverload` attribute on the implementation's module: it
    finds the op of a package, a C++ extension and a function-style wrapper alike, and also
    an op used only in backward.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    found: dict = {}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if isinstance(func, torch._ops.OpOverload) and func.namespace not in TORCH_NAMESPACES:
                found.setdefault(func, (tuple(args), dict(kwargs)))
            return func(*args, **kwargs)

    layer = impl.api.layer(alpha=ALPHA)
    x = torch.linspace(-1.0, 1.0, 6).reshape(2, 3).requires_grad_(True)
    upstream = torch.linspace(0.5, 1.0, 6).reshape(2, 3)
    with Recorder():
        out = layer(x)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.backward(upstream)
    return found


def _fresh_args(args, kwargs, requires_grad: bool):
    def fresh(value):
        if isinstance(value, torch.Tensor):
            t = value.detach().clone()
            if requires_grad and t.is_floating_point() and t.dim() > 0:
                t.requires_grad_(True)
            return t
        if isinstance(value, (list, tuple)):
            return type(value)(fresh(v) for v in value)
        return value

    return fresh(args), {k: fresh(v) for k, v in kwargs.items()}


UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


# It judges how an op is registered, not the value of a gradient: not a backward check.
@check("opcheck", concern="compile", runs_backward=False, control="library")  # needs a registered op
def opcheck(impl):
    """torch.library.opcheck tests a custom op's schema, autograd registration and fake/meta kernels."""
    ops = custom_ops_called(impl)
    if not ops:
        if impl.kind in ("library", "cpp"):
            raise Errored(f"kind {impl.kind}, but no torch.library op dispatched in forward or backward",
                          summary="no op found")
        raise NotApplicable(f"kind {impl.kind}: no op registered through torch.library runs in "
                            "forward or backward (only built-in aten ops)")
    parts, problems, failures, total = [], [], 0, 0
    for op, (args, kwargs) in ops.items():
        per_variant = {}
        for requires_grad in (False, True):
            fargs, fkwargs = _fresh_args(args, kwargs, requires_grad)
            try:
                result = torch.library.opcheck(op, fargs, fkwargs, test_utils=UTILS, raise_exception=False)
            except Exception as exc:  # noqa: BLE001
                raise raised(f"torch.library.opcheck({op})", exc, "opcheck error") from None
            items = []
            for util in UTILS:
                short = util.removeprefix("test_")
                value = result.get(util, "not run")
                total += 1
                if value in ("SUCCESS", "SKIPPED"):
                    items.append(f"{short} {'ok' if value == 'SUCCESS' else 'skipped'}")
                else:
                    failures += 1
                    items.append(f"{short} FAILED")
                    problems.append(f"{util}: {type(value).__name__}: {one_line(value, 110)}")
            per_variant["x requires grad" if requires_grad else "no grad"] = ", ".join(items)
        if len(set(per_variant.values())) == 1:
            parts.append(f"{op} (inputs with and without requires_grad): {per_variant['no grad']}")
        else:
            parts += [f"{op} ({grad}): {items}" for grad, items in per_variant.items()]
    detail = "; ".join(parts)
    if failures:
        first = list(dict.fromkeys(problems))[:2]
        raise Failed(detail + ". " + " | ".join(first), summary=f"{failures}/{total} utils fail")
    return passed(detail, summary=f"{len(ops)} op{'s' if len(ops) > 1 else ''}")
