"""Graph-capturing and functional transforms of a GRL: export, TorchScript, torch.func, ONNX.

docs/checks.md, 'Transforms'. The reversal is what these transforms lose silently: an exported
or scripted program that runs but no longer negates the gradient is `fail`, and a torch.func
transform that raises is `error` with the message. Programs are judged against the truth (the
same model with the harness's reference GRL, eager); the torch.func checks against
`-alpha * upstream` written out.
"""
from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from grl_conformance.checks import check
from grl_conformance.checks.kit.inputs import (
    ALPHA,
    ALPHA_AFTER,
    CONTEXT_ALPHA,
    batch,
    sample_inputs,
)
from grl_conformance.checks.kit.judge import (
    close,
    identical,
    is_reversal,
    judge_alpha_after,
    judge_step,
    raised,
)
from grl_conformance.checks.kit.models import Dann, impl_model, reference_model, unreversed_model
from grl_conformance.core.outcome import (
    NOT_INSTALLED,
    Errored,
    Failed,
    Skipped,
    describe_exception,
    one_line,
    passed,
)
from grl_conformance.core.tolerances import tolerance

CONCERN = "deploy"  # the advice table's column for this area's checks (core/check.py)


def _io_step(fn, x, upstream):
    """(output, input gradient, no parameter gradients): what a program is judged on (an
    exported or scripted module holds its own copies of the parameters)."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    out.backward(upstream)
    return out.detach(), x.grad, []


def _run_program(name: str, program, model, x, upstream, verb: str | None) -> str:
    """Output and input gradient must equal a correct GRL's (the same model with the reference
    GRL, eager) and the implementation's own eager run's; the detail says whether the reversal
    was lost and how the program relates to that eager run. Then, unless `verb` is None (a
    reloaded copy, tied to no layer), `set_alpha` on the model's layer must reach the program.
    Returns that note."""
    got = _io_step(program, x, upstream)
    if got[1] is None:
        raise Failed(f"{name}: no gradient reaches the input", summary="no gradient")
    truth = _io_step(reference_model(ALPHA), x, upstream)
    judge_step(got, truth, where=name, what="the program",
               own_eager=_io_step(model, x, upstream),
               unreversed=_io_step(unreversed_model(), x, upstream))
    if verb is None:
        return ""
    return judge_alpha_after(lambda: _io_step(program, x, upstream),
                             _io_step(reference_model(ALPHA_AFTER), x, upstream), truth,
                             where=name, layer=model[1], made_with=ALPHA, verb=verb)


def _call_targets(graph_module) -> str:
    targets = sorted({str(n.target) for n in graph_module.graph.nodes if n.op == "call_function"})
    return ", ".join(targets)


@check("export", control="composite")  # a Function loses its backward in export
def export(impl):
    """Many GRLs export without error and lose the reversal: run the exported program backward."""
    model = impl_model(impl)
    x, upstream = sample_inputs()
    try:
        program = torch.export.export(model, (x,))
    except Exception as exc:  # noqa: BLE001
        raise raised("torch.export.export", exc, "export error") from None
    try:
        module = program.module()
        followed = _run_program("exported program", module, model, x, upstream, "torch.export")
    except Failed as failed:
        raise Failed(f"{failed.detail}; exported graph calls: {_call_targets(program.graph_module)}",
                     summary=failed.summary) from None
    except Exception as exc:  # noqa: BLE001
        raise raised("running the exported program", exc, "run error") from None
    return passed(f"torch.export.export (default strict setting) of Linear -> GRL -> Linear: the "
                  f"exported program's output and input gradient equal a correct GRL's and its own "
                  f"eager run's ({tolerance('graph').text()}); {followed}; graph calls: "
                  f"{_call_targets(program.graph_module)}")


def _torchscript_column(verb: str, kind: str, build, model, x, upstream):
    """A TorchScript module (scripted or traced) must give a correct GRL's output and input
    gradient; whether torch.jit.save/load round-trips is reported (and the reloaded module judged)."""
    try:
        module = build()
    except Exception as exc:  # noqa: BLE001
        raise raised(f"torch.jit.{verb}", exc, f"{verb} error") from None
    try:
        followed = _run_program(f"{kind} module", module, model, x, upstream, f"torch.jit.{verb}")
    except (Failed, Errored):
        raise
    except Exception as exc:  # noqa: BLE001
        raise raised(f"running the {kind} module", exc, "run error") from None
    buffer = io.BytesIO()
    try:
        torch.jit.save(module, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    except Exception as exc:  # noqa: BLE001 - not saving is a property, reported
        return passed(f"{kind} output and input gradient equal a correct GRL's ({tolerance('graph').text()}); "
                      f"{followed}; torch.jit.save/load does not round-trip ({type(exc).__name__}: "
                      f"{one_line(exc, 160)})", summary="no save")
    _run_program(f"saved and reloaded {kind} module", loaded, model, x, upstream, None)
    return passed(f"{kind} output and input gradient equal a correct GRL's ({tolerance('graph').text()}); "
                  f"{followed}; torch.jit.save/load round-trips with the reversal intact",
                  summary="saves")


@check("jit.script", control="composite")  # torch 2.14 refuses to script any Function
def jit_script(impl):
    """TorchScript must keep the reversal; whether the scripted module saves and loads is reported."""
    model = impl_model(impl)
    x, upstream = sample_inputs()
    return _torchscript_column("script", "scripted", lambda: torch.jit.script(model), model, x, upstream)


@check("jit.trace", control="composite")
def jit_trace(impl):
    """Tracing (legacy, as jit.script) must keep the reversal; whether it saves is reported."""
    model = impl_model(impl)
    x, upstream = sample_inputs()

    def trace():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python values
            return torch.jit.trace(model, (x,), check_trace=False)

    return _torchscript_column("trace", "traced", trace, model, x, upstream)


def _fx_column(impl, leaf: bool, how: str):
    import torch.fx

    model = impl_model(impl)
    x, upstream = sample_inputs()
    grl = model[1]

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return m is grl if leaf else super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
        module = torch.fx.GraphModule(model, graph)
    except Exception as exc:  # noqa: BLE001
        raise raised(f"torch.fx symbolic tracing ({how})", exc, "trace error") from None
    try:
        followed = _run_program(f"FX GraphModule ({how})", module, model, x, upstream,
                                  "torch.fx tracing")
    except (Failed, Errored) as failed:
        raise type(failed)(f"{failed.detail}; traced graph calls: {_fx_targets(module)}",
                           summary=failed.summary) from None
    except Exception as exc:  # noqa: BLE001
        raise raised(f"running the FX GraphModule ({how})", exc, "run error") from None
    return passed(f"torch.fx symbolic trace of Linear -> GRL -> Linear ({how}): the GraphModule's "
                  f"output and input gradient equal a correct GRL's ({tolerance('graph').text()}); {followed}; "
                  f"graph calls: {_fx_targets(module)}")


def _fx_targets(module) -> str:
    names = []
    for node in module.graph.nodes:
        if node.op in ("call_function", "call_method", "call_module"):
            target = node.target if isinstance(node.target, str) else getattr(
                node.target, "__name__", str(node.target))
            names.append(f"{node.op}:{target}")
    return one_line(", ".join(names), 240)


@check("fx.trace", control="composite")  # FX records only a Function's forward
def fx_trace(impl):
    """torch.fx.symbolic_trace through the GRL (torchvision's feature extractors do it): the
    GraphModule must keep the reversal. The detail says whether the GRL as a leaf module does."""
    try:
        return _fx_column(impl, leaf=False, how="traced through the GRL")
    except (Failed, Errored) as broken:
        try:
            _fx_column(impl, leaf=True, how="the GRL as a leaf module")
            hint = ("; as a leaf module (Tracer.is_leaf_module, leaf_modules= in torchvision's "
                    "create_feature_extractor) the GraphModule keeps the reversal")
        except (Failed, Errored) as leaf:
            hint = f"; as a leaf module too: {leaf.detail}"
        raise type(broken)(one_line(broken.detail + hint, 600), summary=broken.summary) from None


@check("func.vmap", concern="torch.func", control="composite")  # the reference defines no vmap rule
def func_vmap(impl):
    """vmap over the GRL must give the identity forward and a reversed backward per sample."""
    layer = impl.api.layer(alpha=ALPHA)
    gen = torch.Generator().manual_seed(3)
    xs = torch.randn(4, 5, generator=gen, requires_grad=True)
    upstream = torch.randn(4, 5, generator=gen)
    vmapped = torch.func.vmap(layer)
    try:
        ys = vmapped(xs)
    except Exception as exc:  # noqa: BLE001
        raise raised("torch.func.vmap(layer)", exc, "vmap error") from None
    if not (isinstance(ys, torch.Tensor) and identical(ys.detach(), xs.detach())):
        raise Failed("vmapped forward is not the identity", summary="wrong output")
    try:
        ys.backward(upstream)
    except Exception as exc:  # noqa: BLE001
        raise raised("backward through the vmapped GRL", exc, "backward error") from None
    if close(xs.grad, upstream, "func"):
        raise Failed("backward through the vmapped GRL is NOT reversed: the input gradient equals "
                     "the upstream gradient", summary="reversal lost")
    if not is_reversal(xs.grad, upstream, ALPHA, "func"):
        got = "None" if xs.grad is None else f"{(xs.grad + ALPHA * upstream).abs().max().item():.3g} max |diff|"
        raise Failed(f"backward through vmap: input gradient is not -alpha * upstream ({got})",
                     summary="wrong gradient")

    def rerun():
        x = xs.detach().clone().requires_grad_(True)
        vmapped(x).backward(upstream)
        return x.grad

    followed = judge_alpha_after(rerun, -ALPHA_AFTER * upstream, -ALPHA * upstream,
                                 where="backward through the vmapped GRL", layer=layer,
                                 made_with=ALPHA, verb="torch.func.vmap")
    return passed("vmap over a batch of 4: forward is the identity, backward through it is "
                  f"-alpha * upstream; {followed}")


@check("func.grad", concern="torch.func")
def func_grad(impl):
    """torch.func.grad through the GRL must give -alpha times the upstream weights."""
    layer = impl.api.layer(alpha=ALPHA)
    gen = torch.Generator().manual_seed(4)
    x, weights = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    transformed = torch.func.grad(lambda t: (layer(t) * weights).sum())
    try:
        grad = transformed(x)
    except Exception as exc:  # noqa: BLE001
        raise raised("torch.func.grad", exc, "grad error") from None
    if not is_reversal(grad, weights, ALPHA, "func"):
        if close(grad, weights, "func"):
            raise Failed("torch.func.grad is not reversed (gradient equals the upstream weights)",
                         summary="reversal lost")
        raise Failed(f"torch.func.grad gives {grad.tolist()}, expected -alpha * w", summary="wrong gradient")
    followed = judge_alpha_after(lambda: transformed(x), -ALPHA_AFTER * weights, -ALPHA * weights,
                                 where="torch.func.grad", layer=layer, made_with=ALPHA,
                                 verb="torch.func.grad")
    return passed(f"torch.func.grad(sum(w * grl(x))) == -alpha * w; {followed}")


@check("func.jvp", concern="torch.func", control="composite")  # nor a jvp rule
def func_jvp(impl):
    """Forward mode must give the tangent -alpha * t (consistent with reverse mode); zero is wrong."""
    layer = impl.api.layer(alpha=ALPHA)
    gen = torch.Generator().manual_seed(5)
    x, tangent = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    try:
        primal, out_tangent = torch.func.jvp(layer, (x,), (tangent,))
    except Exception as exc:  # noqa: BLE001
        raise raised("torch.func.jvp", exc, "jvp error") from None
    if not identical(primal, x):
        raise Failed("jvp primal output is not the input", summary="wrong output")
    if is_reversal(out_tangent, tangent, ALPHA, "func"):
        followed = judge_alpha_after(
            lambda: torch.func.jvp(layer, (x,), (tangent,))[1], -ALPHA_AFTER * tangent,
            -ALPHA * tangent, where="torch.func.jvp", layer=layer, made_with=ALPHA,
            verb="torch.func.jvp")
        return passed("jvp tangent == -alpha * t: forward and reverse mode agree (jacfwd == jacrev); "
                      + followed)
    if not out_tangent.abs().max().item():
        raise Failed("jvp tangent is zero: forward mode drops the derivative (jacfwd != jacrev)",
                     summary="zero tangent")
    if close(out_tangent, tangent, "func"):
        raise Failed("jvp tangent equals t: forward mode is not reversed (jacfwd != jacrev)",
                     summary="identity tangent")
    raise Failed(f"jvp tangent is not -alpha * t (max |diff| "
                 f"{(out_tangent + ALPHA * tangent).abs().max().item():.3g})", summary="wrong tangent")


# --- contexts real training adds: ONNX export (docs/contexts.md) ------------------------------

ONNX_HINT = "pip install 'grl-conformance[onnx]' (onnx, onnxruntime, onnxscript)"


def _onnx_available() -> None:
    import importlib

    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise Skipped(f"{', '.join(missing)} not installed: {ONNX_HINT}", summary=NOT_INSTALLED)


def translation_table(impl) -> dict | None:
    """An implementation declares its ONNX translation as `onnx_translation_table` (op overload
    -> onnxscript function) on its layer class, a dict or a function returning one (so that
    onnxscript is imported only when exporting); torch.onnx.export(custom_translation_table=...)
    gets it."""
    table = getattr(impl.api.layer, "onnx_translation_table", None)
    return table() if callable(table) else table


def _run_onnx(data: bytes, x: torch.Tensor):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _onnx_ops(data: bytes) -> str:
    import onnx

    return ", ".join(sorted({n.op_type for n in onnx.load_from_string(data).graph.node}))


def _quiet():
    import contextlib
    import logging
    import os
    import sys

    @contextlib.contextmanager
    def quiet():
        # the exporters print progress, warnings and (legacy, from C++) the whole TorchScript
        # graph on failure: silence the file descriptors, not only sys.stdout
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, devnull):
                os.close(fd)
            logging.disable(level)

    return quiet()


def _legacy(model, x, want) -> str:
    try:
        buf = io.BytesIO()
        with _quiet():
            torch.onnx.export(model, (x,), buf, dynamo=False)
        got = _run_onnx(buf.getvalue(), x)
        same = close(got, want, "reduction")
        return "legacy exporter (dynamo=False): " + ("same result" if same else "output DIFFERS from eager")
    except Exception as exc:  # noqa: BLE001 - information only
        first = one_line(exc, 140)
        return f"legacy exporter (dynamo=False) raises {type(exc).__name__}: {first}"


@check("onnx.export", runs_backward=False)
def onnx_export(impl):
    """torch.onnx.export(dynamo=True) of a DANN runs in onnxruntime and equals eager."""
    _onnx_available()
    layer = impl.api.layer(alpha=1.0)
    layer.set_alpha(CONTEXT_ALPHA)
    model = Dann(layer).eval()
    x = batch(0)[0]
    with torch.no_grad():
        task, dom = model(x)
        truth = Dann(nn.Identity()).eval()
        want_task, want_dom = truth(x)  # the identity's truth: the same model without a GRL
    if not (identical(task, want_task) and identical(dom, want_dom)):
        raise Errored("the eager forward is not the identity here (forward.identity's business)")

    class DomainOut(nn.Module):  # one output: the domain head's, which goes through the GRL
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            return self.m(t)[1]

    wrapped = DomainOut(model).eval()
    table = translation_table(impl)
    legacy = _legacy(wrapped, x, want_dom)
    try:
        with _quiet():
            program = torch.onnx.export(wrapped, (x,), dynamo=True, verbose=False,
                                        custom_translation_table=table)
        data = program.model_proto.SerializeToString()
    except Exception as exc:  # noqa: BLE001
        text = " ".join(str(exc).split())
        step = ("torch.export" if "step 1/3" in text else "ONNX conversion" if "step 3/3" in text
                else "export")
        cause = exc.__cause__ or exc.__context__
        why = f"{type(cause).__name__}: {one_line(cause, 160)}" if cause else text[:160]
        hint = (" (a custom op needs a custom_translation_table entry: declare it as the layer's "
                "onnx_translation_table)" if "step 3/3" in text else "")
        raise Errored(f"torch.onnx.export(dynamo=True) failed at {step}: {why}{hint}; {legacy}",
                      summary=f"{step} error") from None
    try:
        got = _run_onnx(data, x)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"onnxruntime could not run the exported model: {describe_exception(exc)}; {legacy}",
                      summary="ort error") from None
    if not close(got, want_dom, "reduction"):
        diff = (got - want_dom).abs().max().item() if got.shape == want_dom.shape else "shape"
        raise Failed(f"the exported graph run in onnxruntime differs from eager (max |diff| {diff}); "
                     f"ONNX ops: {_onnx_ops(data)}; {legacy}", summary="wrong output")
    via = " with the layer's onnx_translation_table" if table else ""
    return passed(f"torch.onnx.export(dynamo=True){via} of the DANN's domain branch runs in onnxruntime "
                  f"and equals eager ({tolerance('reduction').text()}); ONNX ops: {_onnx_ops(data)}; "
                  f"{legacy}",
                  summary="translated" if table else "")
