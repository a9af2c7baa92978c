"""The contexts real training puts a GRL in (docs/contexts.md).

Mixed precision, activation checkpointing, serialization and ONNX export. Each check here is
called by a thin `@check` wrapper in the area module it belongs to (amp.autocast,
checkpoint.*, serialize.* in eager; amp.grad_scaler in train; checkpoint.compiled in compile;
onnx.export in transforms); the per-rank DTensor job lives in `harness/checks/dtensor_rank.py`.

Every verdict is judged against the truth: the same DANN-shaped model run the same way with a
trusted reference GRL (`grl_conformance.core.reference.ReferenceGRL`, an autograd.Function whose backward is
`grad * -alpha`), or the reversal scale read off the layer (`reversal_scale`). Alphas are
powers of two, so a correct reversal is exact in every dtype and comparisons can be bitwise
where the arithmetic is the same. Nothing here leaves global state changed: autocast and
`safe_globals` are context managers, dynamo state is reset by the compile area's
`fresh_dynamo`.
"""
from __future__ import annotations

import copy
import io
from contextlib import contextmanager

import torch
from torch import nn

from grl_conformance.checks._common import tol, tolerance_text
from grl_conformance.core.outcome import (
    NOT_INSTALLED,
    CheckSignal,
    Errored,
    Failed,
    NotApplicable,
    Skipped,
    describe_exception,
    passed,
)
from grl_conformance.core.reference import ReferenceGRL

ALPHA = 0.5  # a power of two: -alpha * g is exact in float16/bfloat16 too


# --- trusted reference and the model ---------------------------------------------------------

class Dann(nn.Module):
    """Shared trunk, a task head, a domain head behind the GRL. `grl` may be a module or a
    callable; `segment` wraps the domain branch (activation checkpointing)."""

    def __init__(self, grl, segment=None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.trunk, self.task, self.domain = nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.grl = grl
        self.segment = segment

    def branch(self, f):
        return self.domain(self.grl(f))

    def forward(self, x):
        f = self.trunk(x)
        dom = self.segment(self.branch, f) if self.segment is not None else self.branch(f)
        return self.task(f), dom


def batch(step: int = 0):
    gen = torch.Generator().manual_seed(100 + step)
    return (torch.randn(5, 6, generator=gen), torch.randn(5, 3, generator=gen),
            torch.randn(5, 2, generator=gen))


def dann_loss(outputs, ct, cd):
    task, dom = outputs
    return (task.float() * ct).sum() + (dom.float() * cd).sum()


def grads_of(model: nn.Module) -> dict:
    return {n: (None if p.grad is None else p.grad.detach().clone())
            for n, p in model.named_parameters() if not n.startswith("grl.")}


def compare_grads(got: dict, want: dict, where: str, lost: dict | None = None, *,
                  bitwise: bool = False, tolerance: str = "one_op") -> None:
    """Fail with `where` unless every parameter gradient equals the reference's."""
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            raise Failed(f"{where}: no gradient reached {name}", summary="no gradient")
        ok = torch.equal(g, w) if bitwise else (
            g.shape == w.shape and torch.allclose(g.double(), w.double(), **tol(tolerance)))
        if ok:
            continue
        if lost is not None and lost.get(name) is not None and torch.allclose(
                g.double(), lost[name].double(), **tol("reduction")) and name.startswith("trunk"):
            raise Failed(f"{where}: {name}'s gradient equals that of the model WITHOUT a GRL: the "
                         "reversal is lost", summary="reversal lost")
        diff = (g.double() - w.double()).abs().nan_to_num(nan=float("inf")).max().item()
        raise Failed(f"{where}: gradient of {name} differs from the trusted reference GRL run the "
                     f"same way (max |diff| {diff:.3g}{', bitwise rule' if bitwise else ''})",
                     summary="wrong gradient")


@contextmanager
def at(where: str):
    """An exception raised by the implementation inside this block becomes `error` naming where."""
    try:
        yield
    except CheckSignal:
        raise
    except Exception as exc:  # noqa: BLE001 - the cell's error, with where it happened
        raise Errored(f"{where}: {describe_exception(exc)}", summary="raises") from exc


def reversal_scale(layer, dtype=torch.float64) -> float | None:
    """s such that the layer's input gradient is -s * upstream, or None when it is not a
    multiple of the upstream gradient (read on a fresh non-leaf input, grad mode on)."""
    gen = torch.Generator().manual_seed(7)
    leaf = torch.randn(4, 3, generator=gen, dtype=dtype).requires_grad_(True)
    x = leaf * 1.0
    upstream = torch.randn(4, 3, generator=gen, dtype=dtype)
    y = layer(x)
    if not (isinstance(y, torch.Tensor) and y.requires_grad):
        return None
    (g,) = torch.autograd.grad(y, x, upstream, allow_unused=True)
    if g is None:
        return None
    s = -(g.double() / upstream.double()).flatten()[0].item()
    return s if torch.allclose(g.double(), -s * upstream.double(), **tol("scale")) else None


def _scale_text(s: float | None) -> str:
    return "not a multiple of the upstream gradient" if s is None else f"-{s:g} * upstream"


# --- amp.autocast ----------------------------------------------------------------------------

def autocast_regions() -> list[tuple[str, torch.dtype]]:
    regions = [("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        regions += [("cuda", torch.float16), ("cuda", torch.bfloat16)]
    return regions


def _dt(dtype) -> str:
    return str(dtype).replace("torch.", "")


class _Recorder(nn.Module):
    """Calls the GRL (module or function) and records its input and output dtypes."""

    def __init__(self, grl, seen: list) -> None:
        super().__init__()
        self.inner, self.seen = grl, seen

    def forward(self, t):
        y = self.inner(t)
        self.seen.append((t.dtype, y.dtype))
        return y


def _autocast_run(grl, device: str, dtype: torch.dtype, *, scaled_upstream=None):
    """One forward/backward of the DANN under autocast. Returns (grads, GRL io dtypes)."""
    seen = []
    model = Dann(_Recorder(grl, seen)).to(device)
    x, ct, cd = (t.to(device) for t in batch())
    with torch.autocast(device, dtype=dtype):
        outputs = model(x)
    dann_loss(outputs, ct, cd).backward()
    return grads_of(model), seen, model


def amp_autocast(impl):
    """Under autocast the GRL must return its input's dtype and reverse exactly."""
    notes = []
    for device, dtype in autocast_regions():
        region = f"autocast({device}, {_dt(dtype)})"
        want, ref_seen, _ = _autocast_run(ReferenceGRL(ALPHA), device, dtype)
        lost, _, _ = _autocast_run(nn.Identity(), device, dtype)
        layer = impl.api.layer(alpha=1.0)
        layer.set_alpha(ALPHA)
        for label, grl in (("layer.set_alpha", layer),
                           ("fn", lambda t: impl.api.fn(t, ALPHA))):
            where = f"{region}, {label}"
            with at(where):
                got, seen, model = _autocast_run(grl, device, dtype)
            for inp, out in seen:
                if out != inp:
                    raise Failed(f"{where}: the GRL returns {_dt(out)} for a {_dt(inp)} input (a "
                                 f"custom_fwd(cast_inputs=...) or a cast inside the layer); the "
                                 "identity must keep the dtype autocast chose",
                                 summary=f"{_dt(out)} output")
            compare_grads(got, want, where, lost, bitwise=True)
            # A float32 activation reaching the GRL inside the region (the GRL is not an
            # autocast op: nothing may cast it).
            x32 = torch.randn(4, 3, generator=torch.Generator().manual_seed(3),
                              device="cpu").to(device).requires_grad_(True)
            g32 = torch.randn(4, 3, generator=torch.Generator().manual_seed(4)).to(device)
            with at(f"{where}, float32 input"):
                with torch.autocast(device, dtype=dtype):
                    y = grl(x32)
                expect_dtype = y.dtype == torch.float32
                if not expect_dtype:
                    raise Failed(f"{where}: a float32 input comes out {_dt(y.dtype)} inside the "
                                 "region (the GRL is not an autocast op and must not cast)",
                                 summary=f"{_dt(y.dtype)} output")
                (gi,) = torch.autograd.grad(y, x32, g32)
            if gi.dtype != torch.float32 or not torch.equal(gi, g32 * -ALPHA):
                raise Failed(f"{where}, float32 input: gradient is not -alpha * upstream in float32 "
                             f"(dtype {_dt(gi.dtype)})", summary="wrong gradient")
        io = sorted({f"{_dt(i)}->{_dt(o)}" for i, o in ref_seen})
        notes.append(f"{region}: GRL saw {', '.join(io)}")
    regions = ", ".join(f"{d} {_dt(t)}" for d, t in autocast_regions())
    cuda = "" if torch.cuda.is_available() else " (no CUDA here: float16/bfloat16 on CUDA not run)"
    return passed(f"DANN under autocast ({regions}){cuda}: GRL output keeps its input's dtype, "
                  f"parameter gradients bitwise equal to the trusted reference GRL (alpha "
                  f"{ALPHA}), a float32 input inside the region stays float32 (layer and fn); "
                  + "; ".join(notes))


# --- amp.grad_scaler -------------------------------------------------------------------------

def _scaler_run(grl, device: str, dtype: torch.dtype):
    """Two DANN steps with a GradScaler and two optimizers (trunk+task, domain head); the
    second step's domain loss overflows. Returns per step (grads after unscale, trunk weight
    before/after, scale before/after)."""
    model = Dann(grl).to(device)
    main = torch.optim.SGD([*model.trunk.parameters(), *model.task.parameters()], lr=0.1)
    dom = torch.optim.SGD(model.domain.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 16, growth_interval=1000)
    record = []
    for step, overflow in ((0, False), (1, True)):
        x, ct, cd = (t.to(device) for t in batch(step))
        if overflow:
            cd = cd.clone()
            cd[0, 0] = 1e36  # x 2**16 scale: inf in float32, as a real fp16 overflow would be
        main.zero_grad(set_to_none=True)
        dom.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype):
            outputs = model(x)
        scaler.scale(dann_loss(outputs, ct, cd)).backward()
        scaler.unscale_(main)
        scaler.unscale_(dom)
        grads = grads_of(model)
        before = model.trunk.weight.detach().clone()
        scale = scaler.get_scale()
        scaler.step(main)
        scaler.step(dom)
        scaler.update()
        record.append({"grads": grads, "before": before, "after": model.trunk.weight.detach().clone(),
                       "scale": (scale, scaler.get_scale())})
    return record


def amp_grad_scaler(impl):
    """A GradScaler step: reversed gradients right, and an overflow in the domain loss must
    reach the trunk so that the trunk's optimizer skips the step."""
    device, dtype = ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.bfloat16)
    where = f"GradScaler({device}) with autocast({_dt(dtype)})"
    want = _scaler_run(ReferenceGRL(ALPHA), device, dtype)
    layer = impl.api.layer(alpha=1.0)
    layer.set_alpha(ALPHA)
    with at(where):
        got = _scaler_run(layer, device, dtype)
    compare_grads(got[0]["grads"], want[0]["grads"], f"{where}, step 0 (finite)", bitwise=True)
    if torch.equal(got[0]["before"], got[0]["after"]):
        raise Failed(f"{where}, step 0: the trunk did not step although every gradient was finite",
                     summary="step skipped")
    g = got[1]["grads"]["trunk.weight"]
    if torch.isfinite(g).all():
        raise Failed(f"{where}, step 1: the domain loss overflowed (inf upstream of the GRL) but the "
                     "trunk's gradient is finite: the GRL swallowed the inf, so the trunk's "
                     "optimizer steps on a gradient the scaler would have discarded",
                     summary="overflow swallowed")
    if not torch.equal(got[1]["before"], got[1]["after"]):
        raise Failed(f"{where}, step 1: the trunk stepped on an overflowed step", summary="bad step")
    s0, s1 = got[1]["scale"]
    if not s1 < s0:
        raise Failed(f"{where}, step 1: the scale did not back off ({s0:g} -> {s1:g})",
                     summary="scale kept")
    return passed(f"{where}, two optimizers (trunk+task, domain head): step 0 unscaled gradients "
                  f"bitwise equal to the trusted reference (alpha {ALPHA}); step 1's domain-loss "
                  f"overflow reaches the trunk as non-finite, both steps skipped, scale {s0:g} -> {s1:g}")


# --- checkpoint.* ----------------------------------------------------------------------------

CHECKPOINT_ALPHAS = (0.5, 0.25, 2.0)


def _checkpoint_steps(grl, set_alpha, reentrant: bool | None, compile_ctx=None, policy=None):
    """Three training steps (set_alpha between them); the domain branch in a checkpoint when
    `reentrant` is not None (selective, with `policy`, when given). Returns per step the
    parameter gradients."""
    from torch.utils.checkpoint import checkpoint

    segment = None
    if reentrant is not None and policy is not None:
        import functools

        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        def segment(fn, f):
            return checkpoint(fn, f, use_reentrant=False, context_fn=functools.partial(
                create_selective_checkpoint_contexts, policy))
    elif reentrant is not None:
        def segment(fn, f):
            return checkpoint(fn, f, use_reentrant=reentrant)
    model = Dann(grl, segment)
    run = model
    if compile_ctx is not None:
        run = torch.compile(model, backend="aot_eager")
    out = []
    for step, alpha in enumerate(CHECKPOINT_ALPHAS):
        set_alpha(alpha)
        x, ct, cd = batch(step)
        model.zero_grad(set_to_none=True)
        dann_loss(run(x), ct, cd).backward()
        out.append(grads_of(model))
    return out


def _checkpoint_truth() -> tuple[list, list]:
    """Per step, the trusted reference's gradients without checkpointing, and those of the
    model with no GRL at all (what a lost reversal gives)."""
    ref = ReferenceGRL()
    return (_checkpoint_steps(ref, ref.set_alpha, None),
            _checkpoint_steps(nn.Identity(), lambda a: None, None))


def _checkpoint_forms(impl) -> tuple:
    """(label, grl, set_alpha) for the layer and for the function (its alpha held in a box)."""
    layer = impl.api.layer(alpha=1.0)
    alpha_box = {"a": 1.0}
    return (("layer.set_alpha", layer, layer.set_alpha),
            ("fn", lambda t: impl.api.fn(t, alpha_box["a"]), lambda a: alpha_box.__setitem__("a", a)))


def _compare_steps(got: list, want: list, lost: list, where: str) -> None:
    for step, alpha in enumerate(CHECKPOINT_ALPHAS):
        compare_grads(got[step], want[step], f"{where}, step {step} (alpha {alpha})", lost[step])


def checkpoint_check(impl, reentrant: bool, compile_ctx=None):
    """The domain branch (GRL -> domain head) inside torch.utils.checkpoint, three steps."""
    kind = "reentrant" if reentrant else "non-reentrant"
    want, lost = _checkpoint_truth()
    graphs = []
    for label, grl, set_alpha in _checkpoint_forms(impl):
        where = f"checkpoint(use_reentrant={reentrant}){' compiled (aot_eager)' if compile_ctx else ''}, {label}"
        if compile_ctx is not None:
            with compile_ctx() as counters:
                with at(where):
                    got = _checkpoint_steps(grl, set_alpha, reentrant, compile_ctx)
                n = int(counters["stats"].get("unique_graphs", 0))
                breaks = sum(counters["graph_break"].values())
            if not n:
                raise Errored(f"{where}: torch.compile compiled nothing (the model ran eagerly)",
                              summary="not compiled")
            graphs.append(f"{label} {n} graph(s), {breaks} break(s)")
        else:
            with at(where):
                got = _checkpoint_steps(grl, set_alpha, reentrant)
        _compare_steps(got, want, lost, where)
    extra = f"; {'; '.join(graphs)}" if graphs else ""
    first = ("forward first under no_grad, recomputed with grad in backward" if reentrant else
             "forward recomputed during backward")
    return passed(f"{kind} checkpoint around GRL -> domain head ({first}): {len(CHECKPOINT_ALPHAS)} "
                  f"steps with set_alpha between them (alpha {', '.join(map(str, CHECKPOINT_ALPHAS))}), "
                  f"gradients equal the trusted reference without checkpointing (layer and fn){extra}")


def _sac_policies():
    from torch.utils.checkpoint import CheckpointPolicy

    def save_everything(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE

    def recompute_everything(ctx, op, *args, **kwargs):
        return CheckpointPolicy.PREFER_RECOMPUTE

    return (("save-everything", save_everything), ("recompute-everything", recompute_everything))


def selective_checkpoint_check(impl):
    """The domain branch under selective activation checkpointing (a policy per op), both ends
    of the policy range, three steps with set_alpha between them."""
    policies = _sac_policies()  # torch >= 2.5 has them: every supported torch
    want, lost = _checkpoint_truth()
    forms = _checkpoint_forms(impl)
    for name, policy in policies:
        for label, grl, set_alpha in forms:
            where = f"selective checkpoint ({name} policy), {label}"
            with at(where):
                got = _checkpoint_steps(grl, set_alpha, False, policy=policy)
            _compare_steps(got, want, lost, where)
    return passed(f"torch.utils.checkpoint with create_selective_checkpoint_contexts around GRL -> "
                  f"domain head, a save-everything and a recompute-everything policy: "
                  f"{len(CHECKPOINT_ALPHAS)} steps with set_alpha between them, gradients equal the "
                  f"trusted reference without checkpointing (layer and fn)")


# --- serialize.* -----------------------------------------------------------------------------

def _trained(impl, alpha: float = 0.25):
    """A DANN through the implementation's layer after one SGD step and one more forward whose
    output is still alive (where an EMA update or a checkpoint save happens in a loop)."""
    layer = impl.api.layer(alpha=1.0)
    model = Dann(layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    layer.set_alpha(alpha)
    x, ct, cd = batch(0)
    dann_loss(model(x), ct, cd).backward()
    opt.step()
    kept = model(batch(1)[0])
    return model, kept


def _expect_scale(layer, want: float, where: str) -> None:
    with at(where):
        s = reversal_scale(layer)
    if s is None or abs(s - want) > 1e-6 * max(1.0, abs(want)):
        raise Failed(f"{where}: the GRL's gradient is {_scale_text(s)}, expected -{want:g} * upstream",
                     summary="wrong alpha")


def serialize_copy(impl):
    """copy.deepcopy of a model mid-training (EMA / mean teacher): the copy reverses with the
    original's alpha, and each one's set_alpha leaves the other alone."""
    with at("training steps before the copy"):
        model, kept = _trained(impl)
    try:
        ema = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"copy.deepcopy(model) after a training forward raised "
                      f"{describe_exception(exc)} (a module keeping a non-leaf tensor, e.g. its "
                      "last output, cannot be deep-copied)", summary="deepcopy raises") from None
    del kept
    _expect_scale(ema.grl, 0.25, "the deep copy (original at alpha 0.25)")
    with at("copy.set_alpha(0.75)"):
        ema.grl.set_alpha(0.75)
    _expect_scale(model.grl, 0.25, "the original after the copy's set_alpha(0.75)")
    _expect_scale(ema.grl, 0.75, "the copy after its set_alpha(0.75)")
    with at("original.set_alpha(0.125)"):
        model.grl.set_alpha(0.125)
    _expect_scale(ema.grl, 0.75, "the copy after the original's set_alpha(0.125)")
    with at("EMA update of the copy"):
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 0.01)
    return passed("copy.deepcopy after a training step with a live forward graph: the copy reverses "
                  "with the original's alpha 0.25; set_alpha on either one leaves the other's alpha "
                  "alone (independent state)")


def _local_adapter(exc: BaseException) -> str | None:
    """The harness's own seed adapter named in a pickling error (a class local to a loader in
    impls/ or harness/core/registry.py), else None."""
    text = str(exc)
    for marker in ("_api.<locals>", "_grl_api.<locals>", "_warm_start_api.<locals>",
                   "_module_api.<locals>", "_function_api.<locals>", "grl_conformance.core.registry"):
        if marker in text:
            return text.splitlines()[0][:160]
    return None


def serialize_save(impl):
    """torch.save of the whole model and torch.load back: alpha as saved, independent state."""
    with at("training steps before the save"):
        model, kept = _trained(impl)
    del kept
    buf = io.BytesIO()
    try:
        torch.save(model, buf)
    except Exception as exc:  # noqa: BLE001
        adapter = _local_adapter(exc)
        if adapter and impl.kind in ("package", "external"):
            raise NotApplicable(f"torch.save(model) cannot pickle the harness's seed adapter for this "
                                f"row ({adapter}): a local class of the loader, not the package's "
                                "code; whole-model pickling of the package itself is not judged here") from None
        raise Errored(f"torch.save(model) raised {describe_exception(exc)} (a lambda, closure or "
                      "local class on the module cannot be pickled)", summary="save raises") from None
    with at("original.set_alpha(0.75) after the save"):
        model.grl.set_alpha(0.75)
    data = buf.getvalue()
    try:
        loaded = torch.load(io.BytesIO(data), weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"torch.load(weights_only=False) raised {describe_exception(exc)}",
                      summary="load raises") from None
    _expect_scale(loaded.grl, 0.25, "the loaded model (saved at alpha 0.25, original set to 0.75 since)")
    with at("loaded.set_alpha(0.125)"):
        loaded.grl.set_alpha(0.125)
    _expect_scale(model.grl, 0.75, "the original after the loaded model's set_alpha(0.125)")
    # torch >= 2.6 loads with weights_only=True by default: what does a whole model need?
    try:
        torch.load(io.BytesIO(data))
        default = "torch.load's default (weights_only=True) loads it"
    except Exception as exc:  # noqa: BLE001 - information: every custom module class needs allowlisting
        first = " ".join(str(exc).split())
        glob = first[first.find("GLOBAL"):].split(" was")[0] if "GLOBAL" in first else type(exc).__name__
        classes = sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__)
        try:
            with torch.serialization.safe_globals(classes):
                torch.load(io.BytesIO(data))
            default = (f"torch.load's default weights_only=True refuses it ({glob}), as for any "
                       "custom module class; it loads once the model's module classes are "
                       "allowlisted (torch.serialization.safe_globals)")
        except Exception as exc2:  # noqa: BLE001
            default = (f"torch.load's default weights_only=True refuses it ({glob}); allowlisting "
                       f"the module classes is not enough ({' '.join(str(exc2).split())[:140]}): "
                       "load it with weights_only=False from a trusted file, or save the state_dict")
    return passed(f"torch.save(model) mid-training and torch.load(weights_only=False): the loaded "
                  f"GRL reverses with the saved alpha 0.25 and its set_alpha is independent of the "
                  f"original's; {default}")


def serialize_state_dict(impl):
    """A strict state_dict restore (through torch.save / weights_only=True) into a fresh model."""
    with at("training steps before the save"):
        model, kept = _trained(impl)
    del kept
    probe = impl.api.layer(alpha=1.0)
    before = {k: v.detach().clone() for k, v in probe.state_dict().items()}
    probe.set_alpha(0.25)
    is_state = any(k not in before or not torch.equal(before[k], v)
                   for k, v in probe.state_dict().items())
    grl_keys = [k for k in model.state_dict() if k.startswith("grl.")]
    buf = io.BytesIO()
    with at("torch.save(model.state_dict())"):
        torch.save(model.state_dict(), buf)
    try:
        sd = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"torch.load(state_dict, weights_only=True) raised {describe_exception(exc)} "
                      "(a non-tensor object in the GRL's state, e.g. get_extra_state)",
                      summary="weights_only refuses") from None
    with at("building a fresh model (alpha 1.0)"):
        fresh = Dann(impl.api.layer(alpha=1.0))
    try:
        fresh.load_state_dict(sd, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"strict load_state_dict into a freshly built model raised "
                      f"{describe_exception(exc)} (keys the GRL adds after training forwards, or "
                      "keys that depend on its alpha)", summary="strict load raises") from None
    want = 0.25 if is_state else 1.0
    _expect_scale(fresh.grl, want, f"the restored model (alpha {'is' if is_state else 'is not'} state: "
                                   f"expected its {'saved' if is_state else 'own constructor'} alpha)")
    with at("restored.set_alpha(0.75)"):
        fresh.grl.set_alpha(0.75)
    _expect_scale(model.grl, 0.25, "the original after the restored model's set_alpha(0.75) "
                                   "(mean teacher: a new model loaded from the student's state)")
    with at("original.set_alpha(0.125)"):
        model.grl.set_alpha(0.125)
    _expect_scale(fresh.grl, 0.75, "the restored model after the original's set_alpha(0.125)")
    keys = ", ".join(grl_keys) or "none"
    how = ("alpha is state: the restored model reverses with the saved 0.25" if is_state else
           "alpha is not state: the restored model keeps its constructor's alpha (call set_alpha after "
           "a restore)")
    migrate = (f"; the GRL adds key(s) {keys} to the model's state_dict: a checkpoint from a model "
               "without them needs strict=False" if grl_keys else "; the GRL adds no state_dict key")
    return passed(f"model.state_dict() after a training step, torch.save + torch.load(weights_only=True), "
                  f"strict load into a fresh model: {how}; alphas independent afterwards{migrate}",
                  summary="alpha restored" if is_state else "alpha not state")


# --- onnx.export -----------------------------------------------------------------------------

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
        same = got.shape == want.shape and torch.allclose(got, want, **tol("reduction"))
        return "legacy exporter (dynamo=False): " + ("same result" if same else "output DIFFERS from eager")
    except Exception as exc:  # noqa: BLE001 - information only
        first = " ".join(str(exc).split())[:140]
        return f"legacy exporter (dynamo=False) raises {type(exc).__name__}: {first}"


def onnx_export(impl):
    """A DANN exported with torch.onnx.export(dynamo=True) must run in onnxruntime and equal eager."""
    _onnx_available()
    layer = impl.api.layer(alpha=1.0)
    layer.set_alpha(ALPHA)
    model = Dann(layer).eval()
    x = batch(0)[0]
    with torch.no_grad():
        task, dom = model(x)
        truth = Dann(nn.Identity()).eval()
        want_task, want_dom = truth(x)  # the identity's truth: the same model without a GRL
    if not (torch.equal(task, want_task) and torch.equal(dom, want_dom)):
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
        why = f"{type(cause).__name__}: {' '.join(str(cause).split())[:160]}" if cause else text[:160]
        hint = (" (a custom op needs a custom_translation_table entry: declare it as the layer's "
                "onnx_translation_table)" if "step 3/3" in text else "")
        raise Errored(f"torch.onnx.export(dynamo=True) failed at {step}: {why}{hint}; {legacy}",
                      summary=f"{step} error") from None
    try:
        got = _run_onnx(data, x)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"onnxruntime could not run the exported model: {describe_exception(exc)}; {legacy}",
                      summary="ort error") from None
    if got.shape != want_dom.shape or not torch.allclose(got, want_dom, **tol("reduction")):
        diff = (got - want_dom).abs().max().item() if got.shape == want_dom.shape else "shape"
        raise Failed(f"the exported graph run in onnxruntime differs from eager (max |diff| {diff}); "
                     f"ONNX ops: {_onnx_ops(data)}; {legacy}", summary="wrong output")
    via = " with the layer's onnx_translation_table" if table else ""
    return passed(f"torch.onnx.export(dynamo=True){via} of the DANN's domain branch runs in onnxruntime "
                  f"and equals eager ({tolerance_text('reduction')}); ONNX ops: {_onnx_ops(data)}; "
                  f"{legacy}",
                  summary="translated" if table else "")
