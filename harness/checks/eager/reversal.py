"""Eager autograd semantics of a GRL: the reversal itself (docs/checks.md, 'Eager').

forward.identity, backward.*, alpha.update and graph.shared_trunk. Every check exercises
both the module (`impl.api.layer`, alpha given through `set_alpha`) and the functional form
(`impl.api.fn`) unless it is about the module alone (alpha.update). Alphas are powers of two
wherever a check is not about precision, so that only backward.reversal judges rounding: each
column answers one question.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grl_conformance.checks import check
from grl_conformance.checks.kit.forms import FORMS, forms
from grl_conformance.checks.kit.inputs import randn
from grl_conformance.checks.kit.judge import (
    at,
    close,
    identical,
    input_grad,
    is_reversal,
    name_the_error,
    reversal_error,
    state_changed,
)
from grl_conformance.core import hypothesis_profiles  # noqa: F401 - the run's profile must be loaded
from grl_conformance.core.outcome import (
    Errored,
    Failed,
    Outcome,
    describe_exception,
    expect,
    passed,
)
from grl_conformance.core.tolerances import dtype_name

CONCERN = "eager"  # the advice table's column for this area's checks (core/check.py)

FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)



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
                where = (f"{label} {dtype_name(dtype)} shape {tuple(x.shape)}"
                         f"{' transposed' if not x.is_contiguous() else ''}{'' if grad else ' no_grad'}")
                expect(isinstance(y, torch.Tensor), f"{where}: returned {type(y).__name__}")
                expect(y.dtype == x.dtype, f"{where}: output dtype {y.dtype}")
                expect(y.shape == x.shape, f"{where}: output shape {tuple(y.shape)}")
                expect(y.device == x.device, f"{where}: output device {y.device}")
                yd, xd = y.detach(), before
                if not identical(x.detach(), before, nan=True, sign=True):
                    raise Failed(f"{where}: the forward modified its input in place")
                if not identical(yd, xd, nan=True, sign=True):
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
    return (f"{dtype_name(case.dtype)} shape {tuple(case.shape)}, input {lay(x, case.x_layout)}, "
            f"grad {lay(g, case.g_layout)}{' with ' + ', '.join(special) if special else ''}, "
            f"alpha={case.alpha!r}")


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
                got = input_grad(f(x), x, g)
            except Failed as exc:
                raise _Mismatch(f"{where}: {exc.detail}") from None
            except Exception as exc:  # noqa: BLE001 - reported as error with the counterexample
                raise _Raised(where, exc) from exc
            problem = reversal_error(got, g, case.alpha, case.dtype, case.shape)
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
                    raise Failed(f"{where}: {describe_exception(exc)}", summary="gradcheck") from None
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
                    gi = input_grad(f(x), x, g, create_graph=True)
                except Failed as exc:
                    raise Failed(f"{where}: {exc.detail}") from None
                expect(is_reversal(gi.detach(), g.detach(), a, "structure"),
                       f"{where}: first backward is not -alpha * grad")
                if not gi.requires_grad:
                    raise Failed(f"{where}: under create_graph=True the input gradient does not depend on "
                                 "the upstream gradient (backward detached): second derivative 0, "
                                 f"expected {-a}", summary="detached")
                v = randn(3, 4, seed=6)
                (d,) = torch.autograd.grad(gi, g, v, allow_unused=True)
                if d is None:
                    raise Failed(f"{where}: input gradient is not connected to the upstream gradient "
                                 f"(second derivative lost, expected {-a})", summary="detached")
                expect(is_reversal(d, v, a, "structure"), f"{where}: d(input grad)/d(upstream grad) is "
                       f"{(d / v).flatten()[0].item():.6g}, expected {-a}")
                x = randn(3, 4, seed=7).requires_grad_(True)
                try:
                    torch.autograd.gradgradcheck(_composite(f, a), (x,))
                except GradcheckError as exc:
                    raise Failed(f"{where}: gradgradcheck: {describe_exception(exc)}",
                                 summary="gradgradcheck") from None
    return passed("gradgradcheck passes on the composite; d(grad_in)/d(grad_out) = -alpha (layer and fn, alpha 0.5/2)")


# --- alpha.update ---------------------------------------------------------------------------

@check("alpha.update")
def alpha_update(impl) -> Outcome:
    """set_alpha must change the next gradient, alpha=0 must zero it, and state_dict must keep it."""
    g = randn(4, 3, seed=8)

    def grad(layer) -> torch.Tensor:
        x = randn(4, 3, seed=9).requires_grad_(True)
        return input_grad(layer(x), x, g)

    def scale_of(gi: torch.Tensor) -> str:
        return f"{(gi / g).flatten()[0].item():.6g} * grad"

    layer = impl.api.layer(alpha=1.0)
    gi = grad(layer)
    expect(is_reversal(gi, g, 1.0, "structure"),
           f"alpha=1 from the constructor: gradient is {scale_of(gi)}, expected -1 * grad")
    previous = 1.0
    for a in (0.5, 2.0, 0.25, 1.0, 0.0, 4.0):
        layer.set_alpha(a)
        gi = grad(layer)
        stale = f": set_alpha had no effect (still {previous})" if is_reversal(gi, g, previous, "structure") else ""
        if a == 0.0:
            expect(bool((gi == 0).all()), f"after set_alpha(0.0) the gradient is not zero ({scale_of(gi)}){stale}")
        else:
            expect(is_reversal(gi, g, a, "structure"), f"after set_alpha({a}) the gradient is {scale_of(gi)}, "
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
        gi = input_grad(y, x, g)
        read = "forward" if is_reversal(gi, g, 1.0, "structure") else (
            "backward" if is_reversal(gi, g, 0.5, "structure") else
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
    changed = state_changed(before, after)
    if changed:
        fresh = impl.api.layer(alpha=1.0)
        fresh.load_state_dict(after)
        gi = grad(fresh)
        expect(is_reversal(gi, g, 0.25, "structure"), f"alpha is state ({', '.join(changed)}) but a fresh layer "
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

    for label, grl in forms(impl, a):
        with at(label, summary=""):
            x = x0.clone().requires_grad_(True)
            for m in (trunk, task, dom):
                m.zero_grad(set_to_none=True)
            feats = trunk(x)
            lt = (task(feats) * c_t).sum()
            ld = (dom(grl(feats)) * c_d).sum()
            (gt,) = torch.autograd.grad(lt, x, retain_graph=True)
            if not close(gt, want_task, "structure"):
                why = " (reversed: the layer reverses its input's whole gradient, e.g. a hook on the input)" \
                    if close(gt, -a * want_task, "structure") else ""
                raise Failed(f"{label}: task head's gradient reaches the trunk altered{why}; "
                             f"max error {(gt - want_task).abs().max().item():.3g}", summary="task reversed")
            (gd,) = torch.autograd.grad(ld, x, retain_graph=True)
            if not close(gd, want_dom, "structure"):
                raise Failed(f"{label}: domain head's gradient at the trunk is not -alpha times the "
                             f"unreversed one; max error {(gd - want_dom).abs().max().item():.3g}")
            (lt + ld).backward()
            expect(close(x.grad, want_task + want_dom, "structure"),
                   f"{label}: total gradient at the trunk input differs from the analytic expectation by "
                   f"{(x.grad - want_task - want_dom).abs().max().item():.3g}")
            dfeats = c_t @ wt + (-a) * (c_d @ wd)
            expect(close(trunk.weight.grad, dfeats.T @ x0, "structure"),
                   f"{label}: trunk weight gradient differs from the analytic expectation")
            expect(close(dom.weight.grad, c_d.T @ feats.detach(), "structure"),
                   f"{label}: domain head's own weight gradient is altered (the reversal belongs before it)")
            expect(close(task.weight.grad, c_t.T @ feats.detach(), "structure"),
                   f"{label}: task head's weight gradient is altered")
    return passed(f"task branch unreversed, domain branch x(-{a}), totals match the analytic gradients (layer and fn)")
