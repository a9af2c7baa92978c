"""The judge family: every comparison a cell's verdict rests on, and nowhere else.

One signature style: what was got first, then what it must equal (the truth: `-alpha * upstream`
or the same model with the trusted reference GRL, `core.reference`), then keyword-only `where=`
(the place the message names) and the tolerance's name in `core.tolerances.TOLERANCES`
(`within=`; none where the comparison is exact).

- predicates, the building blocks: `close`, `identical`, `is_reversal` (is this input gradient
  `-alpha * upstream`?), `two_reversals`, `state_changed`, `weights_moved`;
- what is wrong, in words (`None` when nothing is): `name_the_error` (a gradient in a DANN
  user's words: reversal lost, wrong sign, alpha rounded to float32, ...), `reversal_error`
  (backward.reversal's rule), `grads_mismatch`, `first_bitwise_difference`, `max_diff`;
- the input gradient: `input_grad` (the gradient through the layer, or `Failed` for a cut
  graph);
- judges that end a cell: `judge_reversal` (the plain question, exactly), `judge_step`,
  `judge_grads`, `judge_alpha_after`, `judge_replayed_alpha`, `judge_under_hooks`,
  `judge_scale`; each raises `Failed` (or `Errored`) with a detail `"<where>: <what is wrong>
  (<how far>)"` and the matrix cell's few words as summary, or returns a note for the passing
  detail;
- how a raise reads: `at` (a block whose exception is the cell's error), `raised`, and the
  one text helpers of `core.outcome` (`one_line`, `describe_exception`).

A check never takes the implementation's own eager run as the truth; that comparison only adds
to the detail.
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import torch

from grl_conformance.checks.kit.inputs import ALPHA_AFTER
from grl_conformance.core.outcome import CheckSignal, Errored, Failed, describe_exception, one_line
from grl_conformance.core.tolerances import dtype_name, tolerance

# --- how a raise reads ---------------------------------------------------------------------

def raised(what: str, exc: BaseException, summary: str) -> Errored:
    """The cell's error when a step the check takes (`what`: an export, a trace) raised."""
    return Errored(f"{what} raised {type(exc).__name__}: {one_line(exc, 200)}", summary=summary)


@contextmanager
def at(where: str, summary: str = "raises"):
    """An exception raised by the implementation inside this block becomes `error` naming where
    (with `summary`; the eager columns' own cells leave it empty)."""
    try:
        yield
    except CheckSignal:
        raise
    except Exception as exc:  # noqa: BLE001 - the cell's error, with where it happened
        raise Errored(f"{where}: {describe_exception(exc)}", summary=summary) from exc


# --- predicates ----------------------------------------------------------------------------

def close(got, want, within: str = "graph", dtype=None) -> bool:
    """Both tensors, the same shape, and equal within the named tolerance."""
    return got is not None and want is not None and tolerance(within).close(got, want, dtype)


def identical(got, want, *, nan: bool = False, sign: bool = False) -> bool:
    """Bitwise the same values and shape (`nan`: NaN where NaN counts as equal; `sign`: the
    sign bits too, so -0.0 is not 0.0)."""
    if got is None or want is None or got.shape != want.shape:
        return False
    if sign and not torch.equal(torch.signbit(got), torch.signbit(want)):
        return False
    if not nan:
        return torch.equal(got, want)
    return torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~got.isnan()], want[~want.isnan()])


def is_reversal(got, upstream, alpha: float, within: str | None = None) -> bool:
    """Is `got` (an input gradient) `-alpha * upstream`? Exactly, or within the named tolerance."""
    want = -alpha * upstream
    return identical(got, want) if within is None else close(got, want, within)


def two_reversals(got, b1: float, b2: float, c1, c2) -> bool:
    """Is `got` `-b1 c1 - b2 c2` (two GRLs' branches meeting) up to float32 rounding of each term
    (tolerance "structure": two branches that cancel must not turn a rounded alpha into a
    mix-up)?"""
    if got is None or got.shape != c1.shape:
        return False
    t = tolerance("structure")
    scale = (b1 * c1).abs() + (b2 * c2).abs()
    return bool(((got.double() + b1 * c1 + b2 * c2).abs() <= t.atol + t.rtol_for() * scale).all())


def state_changed(before: dict, after: dict) -> list[str]:
    """The state_dict entries of `after` that are new or differ bitwise from `before`."""
    return sorted(k for k in after if k not in before or not torch.equal(before[k], after[k]))


def weights_moved(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Whether an optimizer step changed a weight at all."""
    return not torch.equal(before, after)


# --- the input gradient ----------------------------------------------------------------------

def input_grad(y, x: torch.Tensor, upstream: torch.Tensor, *, where: str = "", summary: str = "",
               **kw) -> torch.Tensor:
    """The gradient `upstream` gives `x` through the GRL's output `y`; `Failed` (with `summary`)
    when the layer returned no tensor or cut the graph, so that no gradient reaches `x`."""
    at_where = f"{where}: " if where else ""
    if not isinstance(y, torch.Tensor):
        raise Failed(f"{at_where}returned {type(y).__name__}, not a tensor", summary=summary)
    if not y.requires_grad:
        raise Failed(f"{at_where}output does not require grad: the layer cut the graph",
                     summary=summary)
    (gi,) = torch.autograd.grad(y, x, upstream, allow_unused=True, **kw)
    if gi is None:
        raise Failed(f"{at_where}no gradient reaches the input: the layer cut the graph",
                     summary=summary)
    return gi


def judge_reversal(got: torch.Tensor, upstream: torch.Tensor, alpha: float, *, where: str) -> None:
    """Fail unless the input gradient `got` is exactly `-alpha * upstream` (a power-of-two
    alpha: no rounding to forgive), naming what is wrong (`name_the_error`) as the summary."""
    if not is_reversal(got, upstream, alpha):
        wrong = name_the_error(got, upstream, alpha, got.dtype)
        raise Failed(f"{where}: the input gradient is not -alpha * upstream ({wrong})",
                     summary=wrong)


# --- what is wrong, in words ---------------------------------------------------------------

LOWER_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


def _coarser(lower: torch.dtype, dtype: torch.dtype) -> bool:
    return torch.finfo(lower).resolution > torch.finfo(dtype).resolution


def name_the_error(got: torch.Tensor, upstream: torch.Tensor, alpha: float, dtype: torch.dtype) -> str:
    """What is wrong with `got` as `-alpha * upstream` (a `dtype` gradient), in a DANN user's
    words: `reversal lost`, `wrong sign`, `zero gradient`, `alpha rounded to <dtype>` or `grad
    rounded to <dtype>` (right to that lower precision only: `outcome.PRECISION_LOSS`), `wrong
    scale (x k)`, or `wrong gradient`. Compared on the finite elements of the truth, within a few
    units in the last place of `dtype` (tolerance "ulps"; "reversal" of the lower precision)."""
    g, q = upstream.detach().double().reshape(-1), got.detach().double().reshape(-1)
    ref = -alpha * g
    keep = ref.isfinite() & q.isfinite()
    g, q, ref = g[keep], q[keep], ref[keep]
    if not ref.numel() or not bool(ref.ne(0).any()):
        return "wrong gradient"
    ulps = tolerance("ulps")
    if alpha != -1.0 and ulps.close(q, g, dtype):
        return "reversal lost"
    if ulps.close(q, -ref, dtype):
        return "wrong sign"
    if not bool(q.ne(0).any()):
        return "zero gradient"
    for lower in LOWER_PRECISION:
        if not _coarser(lower, dtype):
            continue
        rounded = float(torch.tensor(alpha, dtype=torch.float64).to(lower))
        if rounded != alpha and ulps.close(q, -rounded * g, dtype):
            return f"alpha rounded to {dtype_name(lower)}"
        if tolerance("reversal").close(q, ref, lower):
            return f"grad rounded to {dtype_name(lower)}"
    k = float(q @ ref) / float(ref @ ref)
    if ulps.close(q, k * ref, dtype):
        return f"wrong scale (x{k:.3g})"
    return "wrong gradient"


def is_pow2(alpha: float) -> bool:
    return alpha == 0.0 or (math.isfinite(alpha) and math.frexp(abs(alpha))[0] == 0.5)


def reversal_error(got: torch.Tensor, upstream: torch.Tensor, alpha: float,
                   dtype: torch.dtype, shape: tuple) -> str | None:
    """None if `got` is `-alpha * upstream` as docs/checks.md defines it for backward.reversal
    (exact for a power-of-two alpha, else within tolerance "reversal" of the dtype, with one
    subnormal unit of slack; NaN where the truth has NaN, infinities exact), else what is wrong."""
    if got.dtype != dtype:
        return f"gradient dtype {dtype_name(got.dtype)}"
    if tuple(got.shape) != tuple(shape):
        return f"gradient shape {tuple(got.shape)}"
    if not got.numel():
        return None
    ref = -alpha * upstream.detach().double()  # exact float64 reference (Python float is float64)
    got64 = got.detach().double()
    if not torch.equal(ref.isnan(), got64.isnan()):
        lost = ref.isnan() & ~got64.isnan()
        i = (lost if lost.any() else got64.isnan() & ~ref.isnan()).nonzero()[0].tolist()
        what = "nan swallowed" if lost.any() else "nan where none expected"
        return f"{what} at {i}: got {got64[tuple(i)].item()!r}, expected {ref[tuple(i)].item()!r}"
    keep = ~ref.isnan()
    ref, got64 = ref[keep], got64[keep]
    if is_pow2(alpha):
        want = ref.to(dtype).double()  # exact in float64; one rounding into the dtype
        bad = want != got64
        rule = "exact (power-of-two alpha)"
    else:
        info, rel = torch.finfo(dtype), tolerance("reversal").rtol_for(dtype)
        floor = info.smallest_normal * tolerance("subnormal").rtol_for(dtype)
        inf_ref = ref.isinf()
        bad = inf_ref & (got64 != ref)
        fin = ~inf_ref
        r, q = ref[fin].clamp(-info.max, info.max), got64[fin].clamp(-info.max, info.max)
        bad_fin = torch.zeros_like(bad)
        bad_fin[fin] = ~((q - r).abs() <= rel * r.abs() + floor)
        bad = bad | bad_fin
        of_dtype = tolerance("reversal").text().replace("the dtype", dtype_name(dtype))
        rule = f"within {of_dtype} ({rel:.3g} relative)"  # "within 2 eps of float32 (...)"
        want = ref
    if not bad.any():
        return None
    j = bad.nonzero()[0].item()
    err = abs(got64[j].item() - want[j].item()) / max(abs(want[j].item()), torch.finfo(torch.float64).tiny)
    return (f"{bad.sum().item()} of {bad.numel()} elements not {rule}: got {got64[j].item()!r}, "
            f"expected {want[j].item()!r} (relative error {err:.2g})")


def max_diff(a, b, other: str = "reference") -> str:
    """How far tensor a is from b, in a few words (None, shape and dtype mismatches named)."""
    if a is None or b is None:
        return f"one is None (got {a is None}, {other} {b is None})"
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {other} {tuple(b.shape)}"
    if a.dtype != b.dtype:
        return f"dtype {dtype_name(a.dtype)} vs {other} {dtype_name(b.dtype)}"
    nan = int(torch.isnan(a).sum()) - int(torch.isnan(b).sum())
    diff = (a.double() - b.double()).abs().nan_to_num(nan=math.inf).max().item() if a.numel() else 0.0
    return f"max |diff| {diff:.3g}" + (f", {nan:+d} NaN" if nan else "")


_PARTS = ("output", "input gradient", "parameter gradients")


def first_mismatch(got, want, *, bitwise: bool, other: str = "reference") -> tuple[str, str] | None:
    """(part, how far) for the first of output, input gradient, parameter gradients where the
    step results `got` and `want` differ (or of a single result tensor each), bitwise or within
    tolerance "graph"; None when they agree."""
    got, want = (r if isinstance(r, tuple) else (r,) for r in (got, want))
    if len(got) != len(want):
        raise ValueError(f"comparing {len(got)} parts with {len(want)}")
    for name, g, w in zip(_PARTS[:len(got)], got, want, strict=True):
        for a, b in (list(zip(g, w, strict=True)) if isinstance(g, list) else [(g, w)]):
            if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
                return name, max_diff(a, b, other)  # a changed dtype is a wrong result
            if not (torch.equal(a, b) if bitwise else close(a, b)):
                return name, max_diff(a, b, other)
    return None


def grads_mismatch(got: dict, want: dict, within: str = "reduction", *,
                   nan_equal: bool = False) -> str | None:
    """None when every gradient in `want` is in `got` with its shape and dtype and within the
    named tolerance (`nan_equal`: NaN where NaN counts as equal, as a CUDA graph replays an
    overflowed step); else `<parameter>: how far off` for the first that is not."""
    t = tolerance(within)
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            return f"no gradient for {name}"
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"{name}: gradient {tuple(g.shape)} {g.dtype}, expected {tuple(w.shape)} {w.dtype}"
        if not torch.allclose(g, w, **t.kw(), equal_nan=nan_equal):
            rel = t.rtol_for()
            err = ((g - w).abs() / (w.abs() + t.atol / rel)).max().item()
            return f"{name}: max rel err {err:.3g} (rtol {rel:g})"
    return None


def first_bitwise_difference(got: dict, want: dict) -> tuple[str, float] | None:
    """(parameter, max |diff|) of the first gradient in `got` not bitwise equal to `want`'s."""
    for name, g in got.items():
        if not torch.equal(g, want[name]):
            return name, (g - want[name]).abs().max().item()
    return None


# --- judges that end a cell ------------------------------------------------------------------

def judge_step(got, truth, *, where: str, what: str, own_eager=None, unreversed=None,
               bitwise_eager: bool = False) -> None:
    """Fail unless the step `got` equals the truth within tolerance "graph"; then, if
    `own_eager` is given, unless it equals the implementation's own eager step (bitwise when
    asked).

    The detail says how the result relates to the implementation's own eager run ("its eager
    run is wrong the same way", "compile changed a right eager result") and, with
    `unreversed`, whether the gradient is that of the model without the GRL.
    """
    off = first_mismatch(got, truth, bitwise=False)
    if off is not None:
        name, diff = off
        notes = []
        if unreversed is not None and first_mismatch(got, unreversed, bitwise=False) is None:
            notes.append("the gradients equal those of the model without the GRL: reversal lost")
        if own_eager is not None:
            if first_mismatch(own_eager, truth, bitwise=False) is None:
                notes.append(f"its own eager run is right: {what} changed it")
            elif first_mismatch(got, own_eager, bitwise=False) is None:
                notes.append("its own eager run is wrong the same way")
            else:
                notes.append("its own eager run is wrong too, differently")
        lost = bool(notes) and notes[0].endswith("reversal lost")
        summary = "reversal lost" if lost else ("wrong output" if name == "output" else "wrong gradient")
        raise Failed(f"{where}: {name} of {what} differs from a correct GRL's ({diff}, "
                     f"{tolerance('graph').text()})" + "".join(f"; {n}" for n in notes),
                     summary=summary)
    if own_eager is None:
        return
    off = first_mismatch(got, own_eager, bitwise=bitwise_eager, other="eager")
    if off is not None:
        name, diff = off
        how = "not bitwise equal to" if bitwise_eager else "differs beyond tolerance from"
        raise Failed(f"{where}: {name} of {what} is right but {how} its own eager run ({diff})",
                     summary="differs from eager")


def judge_grads(got: dict, want: dict, *, where: str, lost: dict | None = None,
                bitwise: bool = False, within: str = "one_op") -> None:
    """Fail with `where` unless every parameter gradient equals the reference's (bitwise, or
    within the named tolerance); `reversal lost` when the trunk's is that of the model
    WITHOUT a GRL (`lost`)."""
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            raise Failed(f"{where}: no gradient reached {name}", summary="no gradient")
        if torch.equal(g, w) if bitwise else close(g, w, within):
            continue
        if (lost is not None and lost.get(name) is not None and close(g, lost[name], "reduction")
                and name.startswith("trunk")):
            raise Failed(f"{where}: {name}'s gradient equals that of the model WITHOUT a GRL: the "
                         "reversal is lost", summary="reversal lost")
        diff = (g.double() - w.double()).abs().nan_to_num(nan=float("inf")).max().item()
        raise Failed(f"{where}: gradient of {name} differs from the trusted reference GRL run the "
                     f"same way (max |diff| {diff:.3g}{', bitwise rule' if bitwise else ''})",
                     summary="wrong gradient")


def _tensors_of(layer) -> dict:
    return {**{k: v for k, v in vars(layer).items() if isinstance(v, torch.Tensor)},
            **dict(layer.named_buffers())}


def alpha_holder(layer, before: dict, made_with: float, verb: str) -> str:
    """How `layer` held its alpha (`made_with`) when the form was made, from its attributes and
    tensors then (`before`) and now (after `set_alpha`), in an `alpha frozen` detail's words."""
    tensors_before = {k: v for k, v in before.items() if isinstance(v, torch.Tensor)}
    replaced = [k for k, v in _tensors_of(layer).items()
                if k in tensors_before and tensors_before[k] is not v and v.numel() == 1]
    if replaced:
        return (f"set_alpha replaces the tensor `{replaced[0]}` with a new one, and {verb} holds "
                "the old one")
    same = tolerance("same_number")
    held = [k for k, v in before.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)
            and same.holds(abs(abs(float(v)) - made_with), made_with)]
    if held:
        return f"the layer keeps alpha as a Python number (`{held[0]}`), which {verb} records as a constant"
    for name, tensor in tensors_before.items():
        if tensor.numel() == 1:
            return (f"alpha is the tensor `{name}`, which {verb} copied instead of sharing (set in "
                    "place, a shared tensor is read at run time)")
    return f"{verb} kept the alpha the layer had when it was made"


def judge_alpha_after(rerun, want, frozen, *, where: str, layer, made_with: float, verb: str,
                      after: float | None = None) -> str:
    """Call `set_alpha(after)` (default `inputs.ALPHA_AFTER`) on `layer` (what the transformed
    form was made from, at alpha `made_with`), run `rerun()` and require `want` (the truth at
    `after`); the truth at the old alpha (`frozen`) is `fail (alpha frozen)`. The layer gets
    `made_with` back afterwards. Returns the detail's note."""
    after = ALPHA_AFTER if after is None else after
    before = {**vars(layer), **_tensors_of(layer)}
    layer.set_alpha(after)
    try:
        holder = alpha_holder(layer, before, made_with, verb)
        got = rerun()
    except Failed:
        raise
    except Exception as exc:  # noqa: BLE001 - the finding
        raise Errored(f"{where}: after set_alpha({after}) the run raised "
                      f"{describe_exception(exc)}", summary="error after set_alpha") from None
    finally:
        layer.set_alpha(made_with)
    off = first_mismatch(got, want, bitwise=False)
    if off is None:
        return f"set_alpha({after}) afterwards is followed"
    if first_mismatch(got, frozen, bitwise=False) is None:
        raise Failed(f"{where}: after set_alpha({after}) on the layer it was made from, it "
                     f"still reverses with the alpha it was made with: {holder}; a DANN trained "
                     "through it keeps that alpha for the whole schedule", summary="alpha frozen")
    raise Failed(f"{where}: after set_alpha({after}) its result differs from a correct "
                 f"GRL's ({off[1]}, {tolerance('graph').text()})", summary="wrong after set_alpha")


def judge_replayed_alpha(replayed: dict, want_after: dict, want_captured: dict, *,
                         captured: float, after: float, within: str = "reduction") -> str:
    """A graph captured at alpha `captured`, then `set_alpha(after)`: its replayed gradients
    must be the truth at `after`. Returns the passing detail; the truth at `captured` is
    `fail (alpha frozen)` (set_alpha a silent no-op), anything else `fail (wrong grad)`."""
    off = grads_mismatch(replayed, want_after, within, nan_equal=True)
    if off is None:
        return (f"captured at alpha {captured:g}, set_alpha({after:g}) afterwards: the replayed "
                "gradient follows the new alpha (alpha is read from device memory at replay)")
    if grads_mismatch(replayed, want_captured, within, nan_equal=True) is None:
        raise Failed(f"captured at alpha {captured:g}, then set_alpha({after:g}): the replayed "
                     f"gradient still uses {captured:g} (alpha frozen into the graph at capture; "
                     "set_alpha is a silent no-op)", summary="alpha frozen")
    raise Failed(f"after set_alpha({after:g}) the replayed gradient matches neither alpha "
                 f"{after:g} ({off}) nor the captured {captured:g}", summary="wrong grad")


def judge_under_hooks(got, want, alpha: float, *, where: str, packed: int, lossy: bool,
                      rounding_ok: bool = False) -> str:
    """The offload columns' verdict: the input gradient under saved-tensor hooks must be the
    reference GRL's under the same hooks (tolerance "hooks64": float32 rounding of alpha is
    backward.reversal's finding). `rounding_ok`: under a lossy (bfloat16) hook a deviation of
    bfloat16's rounding passes, with a note (the compiled graph, not the GRL, chose to save
    alpha). `packed` is what the GRL packed beyond the reference. Returns a note ("" if exact)."""
    if got is None:
        raise Failed(f"{where}: no gradient reaches the input", summary="no gradient")
    if close(got, want, "hooks64"):
        return ""
    diff = (got - want).abs().max().item()
    if close(got, want / -alpha, "hooks64"):
        raise Failed(f"{where}: the input gradient is the unreversed one (max |diff| {diff:.3g} "
                     "from the reference GRL's under the same hooks): reversal lost",
                     summary="reversal lost")
    relative = ((got - want).abs() / want.abs().clamp_min(torch.finfo(want.dtype).tiny)).max().item()
    if lossy and rounding_ok and packed > 0 and close(got, want, "bfloat16_rounding"):
        return (f"{where}: alpha packed ({packed} B) and rounded by the lossy hook (max relative "
                f"diff {relative:.2g}, within bfloat16's rounding)")
    why = ("what was saved for backward came back rounded (alpha saved through autograd?)"
           if lossy else "the hook is lossless, yet the gradient changed")
    raise Failed(f"{where}: the input gradient differs from the reference GRL's under the same "
                 f"hooks (max |diff| {diff:.3g}, max relative {relative:.2g}): {why}; the GRL "
                 f"packed {packed} B", summary="wrong under hooks")


def reversal_scale(layer, dtype=torch.float64) -> float | None:
    """s such that the layer's input gradient is -s * upstream (tolerance "scale"), or None
    when it is not a multiple of the upstream gradient (read on a fresh non-leaf input, grad
    mode on)."""
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
    return s if is_reversal(g.double(), upstream.double(), s, "scale") else None


def scale_text(s: float | None) -> str:
    return "not a multiple of the upstream gradient" if s is None else f"-{s:g} * upstream"


def judge_scale(layer, want: float, *, where: str) -> None:
    """Fail (`wrong alpha`) unless the layer reverses with `want` (tolerance "scale", relative
    to max(1, want))."""
    with at(where):
        s = reversal_scale(layer)
    if s is None or not tolerance("scale").holds(abs(s - want), max(1.0, abs(want))):
        raise Failed(f"{where}: the GRL's gradient is {scale_text(s)}, expected -{want:g} * upstream",
                     summary="wrong alpha")
