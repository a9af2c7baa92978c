"""The contexts real training puts a GRL in, eager (docs/contexts.md): amp.autocast,
checkpoint.* (activation checkpointing, also run compiled by compile.py's checkpoint.compiled)
serialize.* (an EMA copy, a saved model, a restored state_dict) and grad_mode.nested (an
evaluation loop under no_grad).

Each puts the kit's DANN (`kit.models.Dann`) in the context and judges it against the same
model run the same way with the trusted reference GRL, or the reversal scale read off the
layer. Alphas are powers of two, so a correct reversal is exact in every dtype.
"""
from __future__ import annotations

import contextlib
import copy
import io

import torch
from torch import nn

from grl_conformance.checks import check
from grl_conformance.checks.kit.forms import forms
from grl_conformance.checks.kit.inputs import CONTEXT_ALPHA, batch, randn
from grl_conformance.checks.kit.judge import (
    at,
    identical,
    input_grad,
    is_reversal,
    judge_grads,
    judge_reversal,
    judge_scale,
    state_changed,
)
from grl_conformance.checks.kit.models import Dann, dann_loss, grads_of
from grl_conformance.core.outcome import (
    Errored,
    Failed,
    NotApplicable,
    describe_exception,
    one_line,
    passed,
)
from grl_conformance.core.reference import ReferenceGRL
from grl_conformance.core.tolerances import dtype_name

CONCERN = "eager"  # the advice table's column for this area's checks (core/check.py)


# --- amp.autocast ---------------------------------------------------------------------------

def autocast_regions() -> list[tuple[str, torch.dtype]]:
    regions = [("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        regions += [("cuda", torch.float16), ("cuda", torch.bfloat16)]
    return regions


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


@check("amp.autocast", concern="training tricks")
def amp_autocast(impl):
    """Under torch.autocast the GRL keeps the dtype autocast chose and reverses exactly."""
    notes = []
    for device, dtype in autocast_regions():
        region = f"autocast({device}, {dtype_name(dtype)})"
        want, ref_seen, _ = _autocast_run(ReferenceGRL(CONTEXT_ALPHA), device, dtype)
        lost, _, _ = _autocast_run(nn.Identity(), device, dtype)
        for label, grl in forms(impl, CONTEXT_ALPHA):
            where = f"{region}, {label}"
            with at(where):
                got, seen, model = _autocast_run(grl, device, dtype)
            for inp, out in seen:
                if out != inp:
                    raise Failed(f"{where}: the GRL returns {dtype_name(out)} for a {dtype_name(inp)} input (a "
                                 f"custom_fwd(cast_inputs=...) or a cast inside the layer); the "
                                 "identity must keep the dtype autocast chose",
                                 summary=f"{dtype_name(out)} output")
            judge_grads(got, want, where=where, lost=lost, bitwise=True)
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
                    raise Failed(f"{where}: a float32 input comes out {dtype_name(y.dtype)} inside the "
                                 "region (the GRL is not an autocast op and must not cast)",
                                 summary=f"{dtype_name(y.dtype)} output")
                (gi,) = torch.autograd.grad(y, x32, g32)
            if gi.dtype != torch.float32 or not is_reversal(gi, g32, CONTEXT_ALPHA):
                raise Failed(f"{where}, float32 input: gradient is not -alpha * upstream in float32 "
                             f"(dtype {dtype_name(gi.dtype)})", summary="wrong gradient")
        io = sorted({f"{dtype_name(i)}->{dtype_name(o)}" for i, o in ref_seen})
        notes.append(f"{region}: GRL saw {', '.join(io)}")
    regions = ", ".join(f"{d} {dtype_name(t)}" for d, t in autocast_regions())
    cuda = "" if torch.cuda.is_available() else " (no CUDA here: float16/bfloat16 on CUDA not run)"
    return passed(f"DANN under autocast ({regions}){cuda}: GRL output keeps its input's dtype, "
                  f"parameter gradients bitwise equal to the trusted reference GRL (alpha "
                  f"{CONTEXT_ALPHA}), a float32 input inside the region stays float32 (layer and fn); "
                  + "; ".join(notes))


# --- checkpoint.* ---------------------------------------------------------------------------

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
    """(label, grl, set_alpha) for the layer and for the function."""
    return tuple((label, grl, grl.set_alpha) for label, grl in forms(impl, 1.0))


def _compare_steps(got: list, want: list, lost: list, where: str) -> None:
    for step, alpha in enumerate(CHECKPOINT_ALPHAS):
        judge_grads(got[step], want[step], where=f"{where}, step {step} (alpha {alpha})", lost=lost[step])


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
    made = _checkpoint_forms(impl)
    for name, policy in policies:
        for label, grl, set_alpha in made:
            where = f"selective checkpoint ({name} policy), {label}"
            with at(where):
                got = _checkpoint_steps(grl, set_alpha, False, policy=policy)
            _compare_steps(got, want, lost, where)
    return passed(f"torch.utils.checkpoint with create_selective_checkpoint_contexts around GRL -> "
                  f"domain head, a save-everything and a recompute-everything policy: "
                  f"{len(CHECKPOINT_ALPHAS)} steps with set_alpha between them, gradients equal the "
                  f"trusted reference without checkpointing (layer and fn)")


@check("checkpoint.reentrant", concern="training tricks")
def checkpoint_reentrant(impl):
    """Inside torch.utils.checkpoint(use_reentrant=True) (forward first under no_grad) the reversal holds."""
    return checkpoint_check(impl, reentrant=True)


@check("checkpoint.nonreentrant", concern="training tricks")
def checkpoint_nonreentrant(impl):
    """Inside checkpoint(use_reentrant=False) (forward run twice per step) the reversal holds."""
    return checkpoint_check(impl, reentrant=False)


@check("checkpoint.selective", concern="training tricks")
def checkpoint_selective(impl):
    """Selective activation checkpointing (a policy per op) must keep the reversal."""
    return selective_checkpoint_check(impl)


# --- serialize.* ----------------------------------------------------------------------------

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


@check("serialize.copy", concern="training tricks")
def serialize_copy(impl):
    """copy.deepcopy mid-training (EMA / mean teacher) works and the copy's alpha is its own."""
    with at("training steps before the copy"):
        model, kept = _trained(impl)
    try:
        ema = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001
        raise Errored(f"copy.deepcopy(model) after a training forward raised "
                      f"{describe_exception(exc)} (a module keeping a non-leaf tensor, e.g. its "
                      "last output, cannot be deep-copied)", summary="deepcopy raises") from None
    del kept
    judge_scale(ema.grl, 0.25, where="the deep copy (original at alpha 0.25)")
    with at("copy.set_alpha(0.75)"):
        ema.grl.set_alpha(0.75)
    judge_scale(model.grl, 0.25, where="the original after the copy's set_alpha(0.75)")
    judge_scale(ema.grl, 0.75, where="the copy after its set_alpha(0.75)")
    with at("original.set_alpha(0.125)"):
        model.grl.set_alpha(0.125)
    judge_scale(ema.grl, 0.75, where="the copy after the original's set_alpha(0.125)")
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


@check("serialize.save", concern="training tricks")
def serialize_save(impl):
    """torch.save of the whole model loads back with the saved alpha, independent of the original."""
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
    judge_scale(loaded.grl, 0.25, where="the loaded model (saved at alpha 0.25, original set to 0.75 since)")
    with at("loaded.set_alpha(0.125)"):
        loaded.grl.set_alpha(0.125)
    judge_scale(model.grl, 0.75, where="the original after the loaded model's set_alpha(0.125)")
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
                       f"the module classes is not enough ({one_line(exc2, 140)}): "
                       "load it with weights_only=False from a trusted file, or save the state_dict")
    return passed(f"torch.save(model) mid-training and torch.load(weights_only=False): the loaded "
                  f"GRL reverses with the saved alpha 0.25 and its set_alpha is independent of the "
                  f"original's; {default}")


@check("serialize.state_dict", concern="training tricks")
def serialize_state_dict(impl):
    """A strict state_dict restore (weights_only=True) into a fresh model keeps alpha right."""
    with at("training steps before the save"):
        model, kept = _trained(impl)
    del kept
    probe = impl.api.layer(alpha=1.0)
    before = {k: v.detach().clone() for k, v in probe.state_dict().items()}
    probe.set_alpha(0.25)
    is_state = bool(state_changed(before, probe.state_dict()))
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
    judge_scale(fresh.grl, want, where=f"the restored model (alpha {'is' if is_state else 'is not'} state: "
                                   f"expected its {'saved' if is_state else 'own constructor'} alpha)")
    with at("restored.set_alpha(0.75)"):
        fresh.grl.set_alpha(0.75)
    judge_scale(model.grl, 0.25, where="the original after the restored model's set_alpha(0.75) "
                                   "(mean teacher: a new model loaded from the student's state)")
    with at("original.set_alpha(0.125)"):
        model.grl.set_alpha(0.125)
    judge_scale(fresh.grl, 0.75, where="the restored model after the original's set_alpha(0.125)")
    keys = ", ".join(grl_keys) or "none"
    how = ("alpha is state: the restored model reverses with the saved 0.25" if is_state else
           "alpha is not state: the restored model keeps its constructor's alpha (call set_alpha after "
           "a restore)")
    migrate = (f"; the GRL adds key(s) {keys} to the model's state_dict: a checkpoint from a model "
               "without them needs strict=False" if grl_keys else "; the GRL adds no state_dict key")
    return passed(f"model.state_dict() after a training step, torch.save + torch.load(weights_only=True), "
                  f"strict load into a fresh model: {how}; alphas independent afterwards{migrate}",
                  summary="alpha restored" if is_state else "alpha not state")


# --- grad_mode.nested -----------------------------------------------------------------------

def _autograd_off():
    """(name, context) for the ways an evaluation loop switches autograd off."""
    return (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode))


@check("grad_mode.nested")
def grad_mode_nested(impl):
    """Under no_grad (an evaluation loop) the GRL is the identity with no graph; enable_grad
    nested inside still reverses; afterwards the layer still reverses (the loop left nothing)."""
    upstream = randn(4, 3, seed=21)

    def reversed_at(grl, where: str, *modes) -> None:
        x = randn(4, 3, seed=20).requires_grad_(True)
        with at(where), contextlib.ExitStack() as stack:
            for mode in modes:
                stack.enter_context(mode())
            y = grl(x)
        with at(where):  # a backward that raises is the cell's error; a cut graph its failure
            got = input_grad(y, x, upstream, where=where, summary="reversal lost")
        judge_reversal(got, upstream, CONTEXT_ALPHA, where=where)

    for label, grl in forms(impl, CONTEXT_ALPHA):
        for name, off in _autograd_off():
            where = f"{label} under torch.{name}()"
            x = randn(4, 3, seed=20).requires_grad_(True)
            with at(where), off():
                y = grl(x)
            if not isinstance(y, torch.Tensor) or not identical(y.detach(), x.detach()):
                raise Failed(f"{where}: the output is not the input: an evaluation loop sees "
                             "other features than training does", summary="wrong output")
            if y.grad_fn is not None:  # (a view made under no_grad keeps requires_grad, no node)
                raise Failed(f"{where}: the output has a grad_fn ({type(y.grad_fn).__name__}): the "
                             "GRL builds a graph with autograd off (an evaluation loop keeps every "
                             "batch's graph alive)", summary=f"graph under {name}")
        reversed_at(grl, f"{label}, enable_grad nested in no_grad", torch.no_grad,
                    torch.enable_grad)
        reversed_at(grl, f"{label}, a training step after the evaluation loop")
    return passed("under no_grad and inference_mode the output is the input with no graph; "
                  "enable_grad nested inside no_grad reverses (-alpha * grad); a training step "
                  "afterwards still reverses (layer and fn)")
