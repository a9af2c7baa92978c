"""Eager autograd semantics of a GRL (docs/checks.md, 'Eager').

Every check exercises both the module (`impl.api.layer`, alpha given through `set_alpha`) and
the functional form (`impl.api.fn`) unless it is about the module alone (alpha.update). Alphas
are powers of two wherever a check is not about precision, so that only backward.reversal
judges rounding: each column answers one question.
"""
from __future__ import annotations

import copy
import io
import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from grl_conformance.checks import check
from grl_conformance.checks._common import (
    CONTEXT_ALPHA,
    FORMS,
    Dann,
    at,
    autocast_regions,
    batch,
    checkpoint_check,
    compare_grads,
    dann_loss,
    dtype_name,
    form,
    forms,
    grads_of,
    name_the_error,
    randn,
    reversal_scale,
    scale_text,
    selective_checkpoint_check,
    tol,
)
from grl_conformance.core import hypothesis_profiles  # noqa: F401 - the run's profile must be loaded
from grl_conformance.core.outcome import (
    Errored,
    Failed,
    NotApplicable,
    Outcome,
    describe_exception,
    expect,
    passed,
)
from grl_conformance.core.reference import ReferenceGRL

CONCERN = "eager"  # the advice table's column for this area's checks (core/check.py)

FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values with nan where nan (+0 == -0)."""
    return a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) \
        and torch.equal(a[~a.isnan()], b[~b.isnan()])


def _near(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to float32 rounding: for checks about structure, not precision (backward.reversal
    judges precision), so a float32-rounded alpha or gradient is not flagged twice."""
    return got.shape == want.shape and torch.allclose(got.double(), want.double(), **tol("structure"))


def _input_grad(y: torch.Tensor, x: torch.Tensor, g: torch.Tensor, **kw) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise Failed(f"returned {type(y).__name__}, not a tensor")
    if not y.requires_grad:
        raise Failed("output does not require grad: the layer cut the graph")
    (gi,) = torch.autograd.grad(y, x, g, allow_unused=True, **kw)
    if gi is None:
        raise Failed("no gradient reaches the input: the layer cut the graph")
    return gi


# --- forward.identity ---------------------------------------------------------------------

@check("forward.identity", runs_backward=False)
def forward_identity(impl) -> Outcome:
    """The forward pass must return the input unchanged: same values, dtype, shape, device."""
    aliased = copied = 0
    called = [("layer", impl.api.layer(alpha=1.0))] + forms(impl, 0.0) + forms(impl, 0.3)
    called = [(f"{label} alpha={a}", f) for (label, f), a in zip(called, (1.0, 0.0, 0.0, 0.3, 0.3), strict=True)]
    for dtype in FLOATS:
        base = torch.tensor([0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), -3.25, 7.0],
                            dtype=dtype)
        inputs = ((lambda base=base: base.clone(), True),
                  (lambda base=base: base.reshape(2, 4).t(), True),
                  (lambda dtype=dtype: torch.tensor(2.5, dtype=dtype), True),
                  (lambda dtype=dtype: torch.empty(0, 3, dtype=dtype), True),
                  (lambda base=base: base.clone(), False))
        for make, grad in inputs:
            for label, f in called:
                x = make()
                before = x.detach().clone()  # what the output must equal, even if f edits x in place
                if grad:
                    x.requires_grad_(True)
                    y = f(x)
                else:
                    with torch.no_grad():
                        y = f(x)
                where = (f"{label} {_dt(dtype)} shape {tuple(x.shape)}"
                         f"{' transposed' if not x.is_contiguous() else ''}{'' if grad else ' no_grad'}")
                expect(isinstance(y, torch.Tensor), f"{where}: returned {type(y).__name__}")
                expect(y.dtype == x.dtype, f"{where}: output dtype {y.dtype}")
                expect(y.shape == x.shape, f"{where}: output shape {tuple(y.shape)}")
                expect(y.device == x.device, f"{where}: output device {y.device}")
                yd, xd = y.detach(), before
                if not (_same(x.detach(), before) and torch.equal(torch.signbit(x.detach()), torch.signbit(before))):
                    raise Failed(f"{where}: the forward modified its input in place")
                if not (_same(yd, xd) and torch.equal(torch.signbit(yd), torch.signbit(xd))):
                    bad = ~((yd == xd) | (yd.isnan() & xd.isnan())) | (torch.signbit(yd) != torch.signbit(xd))
                    i = bad.nonzero()[0].tolist() if bad.any() else []
                    raise Failed(f"{where}: output differs from input at {i}: "
                                 f"{xd[tuple(i)].item()!r} -> {yd[tuple(i)].item()!r}")
                if y.numel() and y.data_ptr() == x.data_ptr():
                    aliased += 1
                elif y.numel():
                    copied += 1
    how = "aliases its input (view)" if not copied else ("copies" if not aliased else "sometimes aliases")
    return passed(f"identical for {len(FLOATS)} dtypes x contiguous/transposed/0-d/empty/no_grad with "
            f"+-0, +-inf, nan, layer and fn, alpha 1/0/0.3; output {how}")


# --- backward.reversal --------------------------------------------------------------------

SPECIALS = (math.nan, math.inf, -math.inf, -0.0)
POW2_ALPHAS = (1.0, 0.0, 2.0, 0.5, 0.25, 4.0, 1024.0, 2.0 ** -10)
ODD_ALPHAS = (0.1, 0.3, 1 / 3, 0.7, 1.1, 1000.1, 12345.678, 1e6 + 0.3)


@dataclass(frozen=True)
class _Case:
    dtype: torch.dtype
    shape: tuple
    x_layout: str  # contiguous | transposed | strided
    g_layout: str  # contiguous | transposed | strided | expanded
    seed: int
    scale: float
    specials: tuple = field(default=())  # (flat index into the gradient's base, value)
    alpha: float = 1.0


def _is_pow2(alpha: float) -> bool:
    return alpha == 0.0 or (math.isfinite(alpha) and math.frexp(abs(alpha))[0] == 0.5)


def _laid_out(case: _Case, layout: str, seed: int, specials=()) -> torch.Tensor:
    """A tensor of case.shape/dtype with the given memory layout (a view of a bigger base)."""
    shape = case.shape
    if layout == "transposed" and len(shape) >= 2:
        base_shape = (*shape[:-2], shape[-1], shape[-2])
    elif layout == "strided" and len(shape) >= 1:
        base_shape = (*shape[:-1], 2 * shape[-1])
    elif layout == "expanded" and len(shape) >= 1:
        base_shape = (*shape[:-1], 1)
    else:
        base_shape = shape
    base = randn(*base_shape, seed=seed) * case.scale
    flat = base.view(-1)
    for i, v in specials:
        if flat.numel():
            flat[i % flat.numel()] = v
    base = base.to(case.dtype)
    if layout == "transposed" and len(shape) >= 2:
        return base.transpose(-1, -2)
    if layout == "strided" and len(shape) >= 1:
        return base[..., ::2]
    if layout == "expanded" and len(shape) >= 1:
        return base.expand(shape)
    return base


def _describe(case: _Case, x: torch.Tensor, g: torch.Tensor) -> str:
    def lay(t, layout):
        kind = layout if (not t.is_contiguous() or layout == "contiguous") else "contiguous"
        return f"{kind} strides {t.stride()}"

    special = []
    if g.numel():
        gd = g.detach().double()
        for name, mask in (("nan", gd.isnan()), ("+inf", gd == math.inf), ("-inf", gd == -math.inf)):
            if mask.any():
                special.append(f"{name} at {mask.nonzero()[0].tolist()}")
    return (f"{_dt(case.dtype)} shape {tuple(case.shape)}, input {lay(x, case.x_layout)}, "
            f"grad {lay(g, case.g_layout)}{' with ' + ', '.join(special) if special else ''}, "
            f"alpha={case.alpha!r}")


def _compare(got: torch.Tensor, g: torch.Tensor, case: _Case) -> str | None:
    """None if got == -alpha * g as docs/checks.md defines it (backward.reversal), else what is wrong."""
    if got.dtype != case.dtype:
        return f"gradient dtype {_dt(got.dtype)}"
    if tuple(got.shape) != tuple(case.shape):
        return f"gradient shape {tuple(got.shape)}"
    if not got.numel():
        return None
    ref = -case.alpha * g.detach().double()  # exact float64 reference (Python float is float64)
    got64 = got.detach().double()
    if not torch.equal(ref.isnan(), got64.isnan()):
        lost = ref.isnan() & ~got64.isnan()
        i = (lost if lost.any() else got64.isnan() & ~ref.isnan()).nonzero()[0].tolist()
        what = "nan swallowed" if lost.any() else "nan where none expected"
        return f"{what} at {i}: got {got64[tuple(i)].item()!r}, expected {ref[tuple(i)].item()!r}"
    keep = ~ref.isnan()
    ref, got64 = ref[keep], got64[keep]
    if _is_pow2(case.alpha):
        want = ref.to(case.dtype).double()  # exact in float64; one rounding into the dtype
        bad = want != got64
        rule = "exact (power-of-two alpha)"
    else:
        info = torch.finfo(case.dtype)
        inf_ref = ref.isinf()
        bad = inf_ref & (got64 != ref)
        fin = ~inf_ref
        r, q = ref[fin].clamp(-info.max, info.max), got64[fin].clamp(-info.max, info.max)
        tol = 2 * info.eps * r.abs() + info.smallest_normal * info.eps
        bad_fin = torch.zeros_like(bad)
        bad_fin[fin] = ~((q - r).abs() <= tol)
        bad = bad | bad_fin
        rule = f"within 2 eps of {_dt(case.dtype)} ({2 * info.eps:.3g} relative)"
        want = ref
    if not bad.any():
        return None
    j = bad.nonzero()[0].item()
    err = abs(got64[j].item() - want[j].item()) / max(abs(want[j].item()), 1e-300)
    return (f"{bad.sum().item()} of {bad.numel()} elements not {rule}: got {got64[j].item()!r}, "
            f"expected {want[j].item()!r} (relative error {err:.2g})")


# Pinned cases, run after the drawn ones pass: each known pitfall (docs/checks.md) is hit on every run,
# whatever the random draws did. (Not hypothesis @example: those run first and are not shrunk,
# and a drawn failure, shrunk, is the more useful counterexample.)
PINNED = (
    _Case(torch.float64, (2, 3), "transposed", "transposed", 0, 1.0, (), 0.1),  # non-dyadic, float64
    _Case(torch.float32, (0, 3), "contiguous", "contiguous", 0, 1.0, (), 0.5),  # zero elements
    _Case(torch.float16, (2, 2), "contiguous", "expanded", 0, 1.0, ((0, math.nan),), 0.0),  # nan, alpha 0
    _Case(torch.float32, (3, 2), "strided", "strided", 0, 1.0, ((1, -math.inf),), 2.0),  # inf, strided
    _Case(torch.bfloat16, (), "contiguous", "contiguous", 0, 1e3, (), 1e6 + 0.3),  # 0-d, large alpha
    # alpha above float16's max with a finite result (gradients of 1e-3): a scalar that must
    # not be converted to the input's dtype first
    _Case(torch.float16, (3,), "contiguous", "contiguous", 0, 1e-3, (), 1e5 + 0.3),
)


class _Mismatch(Exception):
    def __init__(self, detail: str, summary: str = "wrong grad") -> None:
        super().__init__(detail)
        self.summary = summary


class _Raised(Exception):
    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(where)
        self.where, self.exc = where, exc


@check("backward.reversal")
def backward_reversal(impl) -> Outcome:
    """grad_in must be -alpha * grad_out for every shape, layout, dtype, alpha and special value."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Flaky

    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
    alphas = st.one_of(st.sampled_from(POW2_ALPHAS), st.sampled_from(ODD_ALPHAS),
                       # not below 1e-4: a smaller alpha is not representable in float16
                       st.floats(1e-4, 1e4, allow_nan=False, allow_infinity=False))
    cases = st.builds(
        _Case, dtype=st.sampled_from(FLOATS), shape=shapes,
        x_layout=st.sampled_from(("contiguous", "transposed", "strided")),
        g_layout=st.sampled_from(("contiguous", "transposed", "strided", "expanded")),
        seed=st.integers(0, 2**16), scale=st.sampled_from((1.0, 1e-3, 1e3)),
        specials=st.lists(st.tuples(st.integers(0, 63), st.sampled_from(SPECIALS)),
                          max_size=3).map(tuple),
        alpha=alphas)
    ran = {"examples": 0}

    # The explain phase re-runs a failure many times to annotate it: seconds per failing cell.
    phases = tuple(p for p in settings.default.phases if p is not Phase.explain)

    def reversal(case: _Case) -> None:
        ran["examples"] += 1
        one_case(case)

    # One example-database key per implementation (hypothesis keys on the test's name): a
    # failure found for one row is replayed first for that row, and passing for another row
    # does not evict it.
    reversal.__name__ = reversal.__qualname__ = f"backward_reversal__{impl.name}"
    reversal = settings(report_multiple_bugs=False, verbosity=Verbosity.quiet, phases=phases,
                        suppress_health_check=list(HealthCheck))(given(cases)(reversal))

    def one_case(case: _Case) -> None:
        g = _laid_out(case, case.g_layout, case.seed + 1, case.specials)
        for label in FORMS:
            x = _laid_out(case, case.x_layout, case.seed).requires_grad_(True)
            where = f"{label}, {_describe(case, x, g)}"
            try:
                ((_, f),) = forms(impl, case.alpha, (label,))
                got = _input_grad(f(x), x, g)
            except Failed as exc:
                raise _Mismatch(f"{where}: {exc.detail}") from None
            except Exception as exc:  # noqa: BLE001 - reported as error with the counterexample
                raise _Raised(where, exc) from exc
            problem = _compare(got, g, case)
            if problem:
                named = ("wrong grad" if got.dtype != case.dtype or tuple(got.shape) != tuple(case.shape)
                         else name_the_error(got, g, case.alpha, case.dtype))
                raise _Mismatch(f"{where}: {named}: {problem}", summary=named)

    prefix = ""
    try:
        reversal()
        prefix = "pinned case, "
        for case in PINNED:
            one_case(case)
    except _Mismatch as exc:
        raise Failed(prefix + str(exc), summary=exc.summary) from None
    except _Raised as exc:
        raise Errored(f"{prefix}{exc.where}: {describe_exception(exc.exc)}") from None
    except Flaky as exc:
        raise Failed(f"inconsistent between identical runs (hypothesis Flaky): {exc}") from None
    return passed(f"{ran['examples']} drawn + {len(PINNED)} pinned cases x (set_alpha, constructor, "
                  "fn): -alpha * grad, exact for power-of-two alpha, within 2 eps of the dtype "
                  "otherwise; nan/inf propagate; 0-d, empty, transposed, strided and expanded "
                  "(stride 0) gradients")


# --- backward.gradcheck / backward.double -------------------------------------------------

def _composite(f, a: float):
    """h(x) = grl(x, a) + (1 + a) * (x - x.detach()): value x, Jacobian I iff grl's backward is -a."""
    return lambda x: f(x) + (1 + a) * (x - x.detach())


def _gradcheck_error():
    from torch.autograd.gradcheck import GradcheckError

    return GradcheckError


def _batched_grad_support(impl) -> str | None:
    """None when a batched (vmap) backward through the layer works, else why not."""
    x = randn(3, 4, seed=1).requires_grad_(True)
    label = "layer"
    try:
        for label, f in forms(impl, 0.5):  # noqa: B007 - label names the form in the except
            y = f(x)
            torch.autograd.grad(y, x, randn(2, 3, 4, seed=2), is_grads_batched=True)
    except Exception as exc:  # noqa: BLE001 - only decides whether to ask gradcheck for it
        return f"{label}: {describe_exception(exc)}"
    return None


@check("backward.gradcheck")
def backward_gradcheck(impl) -> Outcome:
    """gradcheck on grl(x, a) + (1 + a)(x - x.detach()), whose Jacobian is I iff backward is -a."""
    GradcheckError = _gradcheck_error()
    no_vmap = _batched_grad_support(impl)
    n = 0
    for a in (0.0, 0.5, 1.7):
        for label, f in forms(impl, a):
            # plain first, then the undefined-gradient and batched variants, so the detail
            # says which property broke
            for stage, kw in (("", {}),
                              (" with an undefined (None) upstream gradient", {"check_undefined_grad": True}),
                              (" with batched gradients (vmap)", {"check_batched_grad": no_vmap is None})):
                if kw.get("check_batched_grad") is False:
                    continue
                kw = {"check_undefined_grad": False, **kw}
                x = randn(3, 4, seed=3).requires_grad_(True)
                where = f"{label} alpha={a}: gradcheck{stage}"
                try:
                    torch.autograd.gradcheck(_composite(f, a), (x,), **kw)
                except GradcheckError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise Failed(f"{where}: {first}", summary="gradcheck") from None
                except Exception as exc:  # noqa: BLE001 - an error, with where it happened
                    raise Errored(f"{where} raised {describe_exception(exc)}") from None
            n += 1
    batched = "check_batched_grad on" if no_vmap is None else \
        f"check_batched_grad off: batched backward raised ({no_vmap})"
    return passed(f"{n} gradchecks (layer and fn, alpha 0/0.5/1.7, float64), check_undefined_grad on, {batched}")


@check("backward.double")
def backward_double(impl) -> Outcome:
    """Double backward must work and d(input grad)/d(upstream grad) must be -alpha."""
    GradcheckError = _gradcheck_error()
    for a in (0.5, 2.0):
        for label, f in forms(impl, a):
            where = f"{label} alpha={a}"
            with at(where, summary=""):
                x = randn(3, 4, seed=4).requires_grad_(True)
                g = randn(3, 4, seed=5).requires_grad_(True)
                try:
                    gi = _input_grad(f(x), x, g, create_graph=True)
                except Failed as exc:
                    raise Failed(f"{where}: {exc.detail}") from None
                expect(_near(gi.detach(), -a * g.detach()), f"{where}: first backward is not -alpha * grad")
                if not gi.requires_grad:
                    raise Failed(f"{where}: under create_graph=True the input gradient does not depend on "
                                 "the upstream gradient (backward detached): second derivative 0, "
                                 f"expected {-a}", summary="detached")
                v = randn(3, 4, seed=6)
                (d,) = torch.autograd.grad(gi, g, v, allow_unused=True)
                if d is None:
                    raise Failed(f"{where}: input gradient is not connected to the upstream gradient "
                                 f"(second derivative lost, expected {-a})", summary="detached")
                expect(_near(d, -a * v), f"{where}: d(input grad)/d(upstream grad) is "
                       f"{(d / v).flatten()[0].item():.6g}, expected {-a}")
                x = randn(3, 4, seed=7).requires_grad_(True)
                try:
                    torch.autograd.gradgradcheck(_composite(f, a), (x,))
                except GradcheckError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise Failed(f"{where}: gradgradcheck: {first}", summary="gradgradcheck") from None
    return passed("gradgradcheck passes on the composite; d(grad_in)/d(grad_out) = -alpha (layer and fn, alpha 0.5/2)")


# --- alpha.update ---------------------------------------------------------------------------

@check("alpha.update")
def alpha_update(impl) -> Outcome:
    """set_alpha must change the next gradient, alpha=0 must zero it, and state_dict must keep it."""
    g = randn(4, 3, seed=8)

    def grad(layer) -> torch.Tensor:
        x = randn(4, 3, seed=9).requires_grad_(True)
        return _input_grad(layer(x), x, g)

    def scale_of(gi: torch.Tensor) -> str:
        return f"{(gi / g).flatten()[0].item():.6g} * grad"

    layer = impl.api.layer(alpha=1.0)
    gi = grad(layer)
    expect(_near(gi, -g), f"alpha=1 from the constructor: gradient is {scale_of(gi)}, expected -1 * grad")
    previous = 1.0
    for a in (0.5, 2.0, 0.25, 1.0, 0.0, 4.0):
        layer.set_alpha(a)
        gi = grad(layer)
        stale = f": set_alpha had no effect (still {previous})" if _near(gi, -previous * g) else ""
        if a == 0.0:
            expect(bool((gi == 0).all()), f"after set_alpha(0.0) the gradient is not zero ({scale_of(gi)}){stale}")
        else:
            expect(_near(gi, -a * g), f"after set_alpha({a}) the gradient is {scale_of(gi)}, "
                   f"expected {-a} * grad{stale}")
        previous = a
    gi = grad(impl.api.layer(alpha=0.0))
    expect(bool((gi == 0).all()), f"layer(alpha=0.0): gradient is not zero ({scale_of(gi)})")

    # When is alpha read: at forward or at backward? (a design fact, not a defect)
    layer = impl.api.layer(alpha=1.0)
    x = randn(4, 3, seed=9).requires_grad_(True)
    y = layer(x)
    layer.set_alpha(0.5)
    try:
        gi = _input_grad(y, x, g)
        read = "forward" if _near(gi, -g) else ("backward" if _near(gi, -0.5 * g) else
                                                f"neither ({scale_of(gi)})")
    except RuntimeError as exc:
        if "modified by an inplace operation" not in str(exc):
            raise
        read = ("forward and saved: set_alpha between a forward and its backward raises "
                "autograd's in-place version error")

    # state_dict round trip
    layer = impl.api.layer(alpha=1.0)
    before = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    layer.set_alpha(0.25)
    after = layer.state_dict()
    changed = sorted(k for k in after if k not in before or not torch.equal(before[k], after[k]))
    if changed:
        fresh = impl.api.layer(alpha=1.0)
        fresh.load_state_dict(after)
        gi = grad(fresh)
        expect(_near(gi, -0.25 * g), f"alpha is state ({', '.join(changed)}) but a fresh layer "
               f"loaded from state_dict(alpha=0.25) reverses with {scale_of(gi)}")
        state = f"alpha is state ({', '.join(changed)}): state_dict round trip keeps it"
    else:
        keys = ", ".join(after) or "empty"
        state = f"alpha is not state (state_dict: {keys}): a restored layer needs set_alpha again"
    return passed(f"set_alpha takes effect on the next step, alpha=0 zeroes grads; alpha read at {read}; {state}")


# --- graph.shared_trunk ---------------------------------------------------------------------

@check("graph.shared_trunk")
def graph_shared_trunk(impl) -> Outcome:
    """Only the domain branch may be reversed: the task head's gradient must reach the trunk intact."""
    torch.manual_seed(0)
    trunk, task, dom = (torch.nn.Linear(6, 5).double(), torch.nn.Linear(5, 3).double(),
                        torch.nn.Linear(5, 2).double())
    a = 0.5
    wt, wd, wtr = task.weight.detach(), dom.weight.detach(), trunk.weight.detach()
    c_t, c_d = randn(4, 3, seed=10), randn(4, 2, seed=11)
    x0 = randn(4, 6, seed=12)
    want_task = (c_t @ wt) @ wtr
    want_dom = -a * (c_d @ wd) @ wtr

    def close(got, want):
        return _near(got, want)

    for label, grl in forms(impl, a):
        with at(label, summary=""):
            x = x0.clone().requires_grad_(True)
            for m in (trunk, task, dom):
                m.zero_grad(set_to_none=True)
            feats = trunk(x)
            lt = (task(feats) * c_t).sum()
            ld = (dom(grl(feats)) * c_d).sum()
            (gt,) = torch.autograd.grad(lt, x, retain_graph=True)
            if not close(gt, want_task):
                why = " (reversed: the layer reverses its input's whole gradient, e.g. a hook on the input)" \
                    if close(gt, -a * want_task) else ""
                raise Failed(f"{label}: task head's gradient reaches the trunk altered{why}; "
                             f"max error {(gt - want_task).abs().max().item():.3g}", summary="task reversed")
            (gd,) = torch.autograd.grad(ld, x, retain_graph=True)
            if not close(gd, want_dom):
                raise Failed(f"{label}: domain head's gradient at the trunk is not -alpha times the "
                             f"unreversed one; max error {(gd - want_dom).abs().max().item():.3g}")
            (lt + ld).backward()
            expect(close(x.grad, want_task + want_dom),
                   f"{label}: total gradient at the trunk input differs from the analytic expectation by "
                   f"{(x.grad - want_task - want_dom).abs().max().item():.3g}")
            dfeats = c_t @ wt + (-a) * (c_d @ wd)
            expect(close(trunk.weight.grad, dfeats.T @ x0),
                   f"{label}: trunk weight gradient differs from the analytic expectation")
            expect(close(dom.weight.grad, c_d.T @ feats.detach()),
                   f"{label}: domain head's own weight gradient is altered (the reversal belongs before it)")
            expect(close(task.weight.grad, c_t.T @ feats.detach()),
                   f"{label}: task head's weight gradient is altered")
    return passed(f"task branch unreversed, domain branch x(-{a}), totals match the analytic gradients (layer and fn)")


# --- memory.saved ---------------------------------------------------------------------------

def _saved_by(f, n: int):
    """(bytes held, descriptions) of what f saves for backward on a fresh leaf of n float32."""
    x = torch.randn(n, generator=_gen(13)).requires_grad_(True)
    seen: list[torch.Tensor] = []

    def pack(t):
        seen.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f(x)
    storages, parts = {}, []
    for t in seen:
        try:
            key, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        except Exception:  # noqa: BLE001 - tensors without storage (subclasses): count elements
            key, nbytes = id(t), t.numel() * t.element_size()
        storages[key] = max(storages.get(key, 0), nbytes)
        what = "the input itself" if t.numel() and t.data_ptr() == x.data_ptr() else \
            f"{tuple(t.shape)} {_dt(t.dtype)}"
        parts.append(what)
    return sum(storages.values()), parts


def _keeps_input_alive(f, n: int) -> bool:
    """Whether the graph built by f keeps its (non-leaf) input alive by other means than
    save_for_backward, e.g. `ctx.x = x` in a Function, which saved_tensors_hooks never sees."""
    import gc
    import weakref

    leaf = torch.randn(n, generator=_gen(14)).requires_grad_(True)
    x = leaf * 1.0
    ref = weakref.ref(x)
    y = f(x)
    out = y.sum() if isinstance(y, torch.Tensor) else None
    del x, y
    gc.collect()
    alive = ref() is not None
    del out
    return alive


@check("memory.saved", concern="memory", runs_backward=False)
def memory_saved(impl) -> Outcome:
    """A GRL needs only alpha for backward: saving an activation-sized tensor wastes memory."""
    small, big = 4096, 16384
    notes = []
    for label, f in forms(impl, 0.5):
        b_small, parts = _saved_by(f, small)
        b_big, _ = _saved_by(f, big)
        what = f"{b_big} B at N={big} float32" + (f" ({', '.join(parts)})" if parts else "")
        if b_big > b_small or b_big >= big * 4 // 2:
            raise Failed(f"{label} saves activation-sized tensors for backward: {b_small} B at N={small}, "
                         f"{what}", summary=f"saves {b_big // 1024} KiB")
        if _keeps_input_alive(f, big):
            raise Failed(f"{label} keeps its input alive for backward outside save_for_backward "
                         f"(e.g. a tensor stored on ctx): {big * 4} B held at N={big} float32",
                         summary=f"keeps {big * 4 // 1024} KiB")
        notes.append(f"{label} {b_big} B" + (f" ({', '.join(parts)})" if parts else ""))
    return passed(f"saves no activation-sized tensor: {'; '.join(notes)} for a {big * 4} B input")


@check("memory.graph_freed", concern="memory", runs_backward=False)  # judges memory, not the gradient
def memory_graph_freed(impl) -> Outcome:
    """A step's graph must be freed by reference counting alone, backward run or not: a GRL
    that keeps its output on ctx makes a cycle that holds every step's activations until gc."""
    import gc
    import weakref

    notes = []
    for label, f in forms(impl, 0.5):
        for backward in (False, True):
            when = "after backward" if backward else "without backward (an evaluation forward)"
            gc.collect()
            gc.disable()
            try:
                x = randn(64, 256, dtype=torch.float32, seed=21).requires_grad_(True)
                h = x * 2.0  # an activation the step's graph owns
                y = f(h)
                loss = (y * y).sum()
                if backward:
                    loss.backward()
                refs = {"the GRL's output": weakref.ref(y), "its input activation": weakref.ref(h)}
                del x, h, y, loss
                alive = [name for name, ref in refs.items() if ref() is not None]
            finally:
                gc.enable()
            if alive:
                gc.collect()
                freed = all(ref() is None for ref in refs.values())
                raise Failed(f"{label}: {' and '.join(alive)} still alive {when} once every "
                             f"reference is dropped" + ("; gc.collect() frees it: a reference "
                             "cycle (e.g. the output kept on ctx)" if freed else
                             "; even gc.collect() does not free it"),
                             summary="kept until gc" if freed else "leaks")
        notes.append(label)
    return passed(f"{', '.join(notes)}: output and input activation freed without the garbage "
                  "collector, with and without backward")


@check("memory.offload", concern="memory")
def memory_offload(impl) -> Outcome:
    """Under saved-tensor hooks (one compressing what autograd saves to bfloat16, as activation
    compression does, and torch's `save_on_cpu`), the gradients must equal the reference GRL's
    under the same hooks: a GRL that saves alpha through save_for_backward gets a rounded alpha
    back. The summary gives the bytes the GRL packs (0 for one that saves nothing)."""
    from grl_conformance.checks._common import (
        OFFLOAD_ALPHA,
        grad_under_hooks,
        impl_model,
        judge_under_hooks,
        linear_grl_linear,
        offload_hooks,
        reference_model,
    )

    alpha = OFFLOAD_ALPHA
    made = [("layer", lambda: impl_model(impl, alpha)),
            ("fn", lambda: linear_grl_linear(form(impl, "fn", alpha)))]
    notes, most = [], 0
    for hooks_label, lossy, make_hooks in offload_hooks():
        want, ref_bytes = grad_under_hooks(reference_model(alpha).double(), make_hooks)
        for label, make in made:
            got, got_bytes = grad_under_hooks(make().double(), make_hooks)
            extra = max(0, got_bytes - ref_bytes)
            most = max(most, extra)
            where = f"{label} under {hooks_label}"
            # strict even under the lossy hook: in eager, saving alpha is the GRL's own choice
            judge_under_hooks(where, got, want, alpha, extra, lossy)
            notes.append(f"{where} packs {extra} B")
    return passed(f"float64 model, alpha {alpha}: input gradient equals the reference GRL's under "
                  f"the same hooks; {'; '.join(notes)} beyond the reference's",
                  summary=f"packs {most} B")


def _two_branch_grad(f1, f2, x0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    x = x0.detach().clone().requires_grad_(True)
    ((f1(x) * c1).sum() + (f2(x) * c2).sum()).backward()
    return x.grad


def _branches_right(got, b1: float, b2: float, c1, c2) -> bool:
    """-b1 c1 - b2 c2 up to float32 rounding of each term (precision is backward.reversal's
    question; two branches that cancel must not turn a rounded alpha into a mix-up)."""
    if got is None or got.shape != c1.shape:
        return False
    scale = (b1 * c1).abs() + (b2 * c2).abs()
    return bool(((got.double() + b1 * c1 + b2 * c2).abs() <= 1e-6 * scale + 1e-30).all())


@check("graph.several_grls")
def graph_several_grls(impl) -> Outcome:
    """Two GRLs with different alphas in one graph (one per discriminator, as multi-adversarial
    and CDAN-style models do), then the same from several threads at once: each branch must get
    its own -alpha (alpha kept in class or module state mixes them up)."""
    import threading

    a1, a2 = 0.3, 1.7
    x0 = randn(8, 16, seed=31)
    c1, c2 = randn(8, 16, seed=32), randn(8, 16, seed=33)
    m1, m2 = impl.api.layer(alpha=a1), impl.api.layer(alpha=a2)
    pairs = [("two modules", m1, m2),
             ("two functional calls", form(impl, "fn", a1), form(impl, "fn", a2))]
    for label, f1, f2 in pairs:
        got = _two_branch_grad(f1, f2, x0, c1, c2)
        if not _branches_right(got, a1, a2, c1, c2):
            mixed = _branches_right(got, a2, a2, c1, c2) or _branches_right(got, a1, a1, c1, c2)
            raise Failed(f"{label} with alphas {a1} and {a2} in one graph: the input gradient is not "
                         f"-{a1} * upstream1 - {a2} * upstream2"
                         + ("; both branches got the same alpha (alpha kept in shared state)" if mixed
                            else ""), summary="alphas mixed" if mixed else "wrong grad")
    # Threads: each with its own pair of instances and alphas, and all sharing one instance.
    errors: list[str] = []
    shared = impl.api.layer(alpha=a1)

    def worker(k: int) -> None:
        try:
            b1, b2 = 0.1 * (k + 1), 0.5 + 0.25 * k
            own1, own2 = impl.api.layer(alpha=b1), impl.api.layer(alpha=b2)
            for _ in range(25):
                got = _two_branch_grad(own1, own2, x0, c1, c2)
                if not _branches_right(got, b1, b2, c1, c2):
                    errors.append(f"thread {k}: its own instances (alphas {b1:g}, {b2:g}) gave a "
                                  "wrong input gradient")
                    return
                got = _two_branch_grad(shared, shared, x0, c1, c2)
                if not _branches_right(got, a1, a1, c1, c2):
                    errors.append(f"thread {k}: the shared instance (alpha {a1}) gave a wrong "
                                  "input gradient")
                    return
        except Exception as exc:  # noqa: BLE001 - reported as the cell's failure
            errors.append(f"thread {k}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Failed(f"4 threads, each with its own two instances and all sharing one: {errors[0]}",
                     summary="threads mixed")
    return passed(f"alphas {a1} and {a2} in one graph (modules and functional calls), and 4 threads "
                  "x 25 steps with their own instances and a shared one: every branch got its own "
                  "-alpha")


# --- inplace.after --------------------------------------------------------------------------

# autograd's own refusals of an in-place op (view of a custom Function or multi-output view op,
# saved tensor modified, leaf view); anything else raised is the implementation's error
_CLEAR = re.compile(r"is being modified inplace|modified by an inplace operation|"
                    r"used in an in-place operation", re.IGNORECASE)


@check("inplace.after", control="composite")
def inplace_after(impl):
    """relu_ right after the layer: the gradient must stay right, or autograd must refuse loudly.

    Its control is the composite GRL, which returns a new tensor: the reference returns a view,
    raises at relu_ and so would pass the column without ever running a backward."""
    a = 0.5
    x0 = torch.tensor([1.0, -2.0, 3.0, -0.5, 0.25, -4.0], dtype=torch.float64)
    c = randn(6, seed=14)
    want = 2 * -a * c * (x0 > 0)
    results = []
    for label, f in forms(impl, a):
        leaf = x0.clone().requires_grad_(True)
        x = leaf * 2  # a non-leaf activation, as inside a network
        with at(label, summary=""):
            try:
                y = f(x)
                y.relu_()
                (y * c).sum().backward()
            except RuntimeError as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                if not _CLEAR.search(message):
                    raise
                results.append(f"{label} raises a clear error ({message[:150]})")
                continue
            expect(_near(y.detach(), torch.relu(x0 * 2)), f"{label}: relu_ after the layer gave wrong values")
            if leaf.grad is None or not _near(leaf.grad, want):
                got = "None" if leaf.grad is None else str([round(v, 4) for v in leaf.grad.tolist()])
                why = " (reversal silently lost)" if leaf.grad is not None and _near(leaf.grad, -want / a) else ""
                raise Failed(f"{label}: wrong gradient after relu_{why}: {got}, expected "
                             f"{[round(v, 4) for v in want.tolist()]}", summary="silent wrong grad")
            results.append(f"{label} correct gradient")
    raised = [r for r in results if " raises " in r]
    if len(raised) == len(results) == 2 and raised[0].split(" ", 1)[1] == raised[1].split(" ", 1)[1]:
        results = [f"layer and fn {raised[0].split(' ', 1)[1].replace('raises', 'raise', 1)}"]
    return passed("; ".join(results) + " (both acceptable; a silent wrong gradient is not)",
                  summary="raises" if len(raised) == 2 else "")


# --- contexts real training adds: autocast, checkpointing, serialization ----------------------
# (docs/contexts.md explains each column; the DANN model and checkpointing are in the kit)


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
                    raise Failed(f"{where}: a float32 input comes out {dtype_name(y.dtype)} inside the "
                                 "region (the GRL is not an autocast op and must not cast)",
                                 summary=f"{dtype_name(y.dtype)} output")
                (gi,) = torch.autograd.grad(y, x32, g32)
            if gi.dtype != torch.float32 or not torch.equal(gi, g32 * -CONTEXT_ALPHA):
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
        raise Failed(f"{where}: the GRL's gradient is {scale_text(s)}, expected -{want:g} * upstream",
                     summary="wrong alpha")


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


@check("serialize.state_dict", concern="training tricks")
def serialize_state_dict(impl):
    """A strict state_dict restore (weights_only=True) into a fresh model keeps alpha right."""
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
