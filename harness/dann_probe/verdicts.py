"""The probe's named checks: what the measurements say about the wiring, in a DANN user's words.

Each check is a function of the measurements (the passes at each progress point, the step on the
domain head, the spec) returning a `Verdict`; `CHECKS` is their order in every report. The ids
are part of the probe's JSON format (docs/probe.md).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from grl_conformance.core.outcome import FAIL, PASS, SKIP
from grl_conformance.dann_probe.measure import FD_ALPHA, Pass
from grl_conformance.dann_probe.pairing import ALPHA
from grl_conformance.dann_probe.spec import Spec
from grl_conformance.dann_probe.training import Step, missing_from_optimizer
from grl_conformance.dann_probe.watch import rounding


@dataclass
class Verdict:
    """A check's outcome. `unverified`: a skip because the measurement could not be made (not
    because the spec did not ask): `ok` is then False, the result NOT VERIFIED."""

    check: str
    status: str
    summary: str
    figures: dict = field(default_factory=dict)
    unverified: bool = False

    def as_dict(self) -> dict:
        return {"check": self.check, "status": self.status, "summary": self.summary,
                "unverified": self.unverified, "figures": self.figures}


@dataclass
class Measurements:
    spec: Spec
    passes: list[Pass]
    step: Step


def _p(progress: float | None) -> str:
    return "now" if progress is None else f"p={progress:g}"


def _alphas(m: Measurements) -> list[tuple[float | None, float]]:
    """alpha at each point where the pairing measured it element by element: how strongly the
    trunk is trained against the domain classifier, whether a GRL or the objective reverses."""
    return [(x.progress, x.alpha) for x in m.passes if x.alpha is not None]


def _fd_alphas(m: Measurements) -> list[tuple[float | None, float]]:
    return [(x.progress, x.fd_effective) for x in m.passes if x.fd_effective is not None]


def _per_call(m: Measurements) -> str:
    """Where each trunk call reverses with its own alpha: the figures and the likely cause."""
    differ = [x for x in m.passes if x.domain.calls_differ]
    if not differ:
        return ""
    x = differ[0]
    calls = ", ".join(f"{-c * x.weight:.4g}" for c, _ in x.domain.per_call)
    return (f"; alpha differs between the {len(x.domain.per_call)} trunk calls of one step "
            f"({calls} at {_p(x.progress)}): each call reverses with its own alpha, as a "
            "coefficient that steps on each call does (a warm-start counter advanced once per GRL "
            "call: the schedule then runs twice as fast as the steps)")


def _fmt(values: Sequence[tuple[float | None, float]]) -> str:
    return ", ".join(f"{a:.4g} at {_p(p)}" for p, a in values)


def reach(m: Measurements) -> Verdict:
    """The domain loss's gradient reaches the trunk's output (not missing, not zero everywhere)."""
    figures = {"trunk_grad_norm": {_p(x.progress): x.domain.trunk_norm for x in m.passes}}
    errors = [x for x in m.passes if x.domain.error]
    if errors:
        return Verdict("reach", FAIL, f"the backward of the domain loss raised at "
                       f"{_p(errors[0].progress)}: {errors[0].domain.error}", figures)
    broken = [x for x in m.passes if not x.domain.finite]
    if broken:
        return Verdict("reach", FAIL, f"the domain loss or its gradient at the trunk is not finite "
                       f"(nan or inf) at {_p(broken[0].progress)}", figures)
    if not any(x.domain.reached for x in m.passes):
        if any(x.domain.trunk_without_grad for x in m.passes):
            where = ("the trunk's own output carries no gradient (computed under no_grad, or "
                     "detached inside the trunk), though the trunk has trainable parameters")
        elif all(x.domain.head_detached for x in m.passes):
            where = ("the domain head's input carries no gradient: the features are detached (or "
                     "computed under no_grad) before the domain head")
        else:
            where = ("it stops between the domain head and the trunk: the features are detached "
                     "before the domain head")
        return Verdict("reach", FAIL, f"the domain loss does not reach the trunk: {where}", figures)
    if all(x.domain.trunk_norm == 0.0 for x in m.passes):
        return Verdict("reach", FAIL, "the domain loss's gradient at the trunk is 0 at every "
                       f"progress probed ({', '.join(_p(x.progress) for x in m.passes)}): alpha "
                       "stays 0 (a warm-start coefficient that never leaves its start, a schedule "
                       "that never reaches the GRL, or an alpha kept in an integer tensor that "
                       "truncates it?)", figures)
    norms = [x.domain.trunk_norm for x in m.passes]
    return Verdict("reach", PASS, f"|grad| at the trunk {min(norms):.3g} .. {max(norms):.3g}", figures)


def reversal(m: Measurements) -> Verdict:
    """The gradient at the trunk is -alpha times the gradient at the domain head's input, alpha > 0
    (by finite differences where the element-by-element pairing cannot say)."""
    rows = [{"progress": x.progress, "alpha": x.alpha,
             "grl_coefficient": (0.0 - x.domain.coefficient) if x.domain.comparable else None,
             "weight_in_trunk_objective": x.weight,
             "residual": x.domain.residual if x.domain.comparable else None,
             "per_call_alpha": [-c * x.weight for c, _ in x.domain.per_call] or None,
             "alpha_finite_difference": x.fd_effective} for x in m.passes]
    figures = {"measured": rows}
    if m.spec.found_in_head:
        figures["measured_at"] = m.spec.domain_head.name
    found = f" ({m.spec.found_in_head})" if m.spec.found_in_head else ""
    subtracted = [x for x in m.passes if x.weight < 0]
    objective = next((x.weight_note for x in m.passes if x.weight_note), "")
    if not any(x.domain.reached and x.domain.trunk_norm > 0 and x.domain.finite for x in m.passes):
        return Verdict("reversal", SKIP, "not measured: no finite gradient of the domain loss "
                       "reaches the trunk (see reach)", figures)
    blocked = [x for x in m.passes if not x.domain.comparable and x.domain.reason]
    if blocked:
        x = blocked[0]
        fd = _fd_alphas(m)
        if len(fd) == len(m.passes) and all(a > 0 for _, a in fd):
            return Verdict("reversal", PASS, f"reversed, alpha {_span(fd)} by finite differences "
                           f"(+-{FD_ALPHA.rtol:.0%}; not element by element: "
                           f"{x.domain.reason})", figures)
        if fd and all(a < 0 for _, a in fd):
            return Verdict("reversal", FAIL, f"not reversed: by finite differences the domain loss's "
                           f"gradient reaches the trunk with alpha {_fmt(fd[:3])} ({x.domain.reason})",
                           figures)
        why = x.fd_note or "no finite difference"
        return Verdict("reversal", SKIP, f"cannot compare: {x.domain.reason}; {why}", figures,
                       unverified=True)
    off = [x for x in m.passes if x.domain.comparable and not x.domain.proportional]
    if off:
        x = off[0]
        return Verdict("reversal", FAIL, f"at {_p(x.progress)} the gradient at the trunk is not a "
                       f"multiple of the gradient at the domain head's input (residual "
                       f"{x.domain.residual:.2g}, tolerance {x.domain.tolerance:.0e}): a GRL whose "
                       "backward is not -alpha * grad, or the domain loss reaches the trunk by a "
                       "second route", figures)
    alphas = _alphas(m)
    left_out = [x for x in m.passes if abs(x.weight) <= x.domain.alpha_tolerance]
    if left_out:
        return Verdict("reversal", FAIL, f"the objective that steps the trunk ('total') leaves the "
                       f"domain loss out ({objective} at {_p(left_out[0].progress)}): the trunk "
                       "is never trained against the domain classifier", figures)
    if all(x.domain.unreversed for x in m.passes) and subtracted:
        if len(subtracted) == len(m.passes):
            return Verdict("reversal", PASS, f"reversed in the objective, alpha {_span(alphas)}: "
                           f"{objective} (no GRL: the objective that steps the trunk subtracts the "
                           f"domain loss){_per_call(m)}{found}", figures)
        return Verdict("reversal", FAIL, f"the objective subtracts the domain loss at only some "
                       f"progress points ({', '.join(_p(x.progress) for x in subtracted)}): "
                       f"{objective}", figures)
    if subtracted and any(x.domain.proportional and not x.domain.unreversed for x in m.passes):
        grl = next(x for x in m.passes if x.domain.proportional and not x.domain.unreversed)
        return Verdict("reversal", FAIL, f"reversed twice: a GRL (alpha {-grl.domain.coefficient:.4g}) "
                       f"and an objective that subtracts the domain loss ({objective}) cancel out: "
                       "the trunk is trained to help the domain classifier. Keep one: the GRL with "
                       f"label + domain, or no GRL with label - lambda x domain{found}", figures)
    if all(x.domain.unreversed for x in m.passes):
        fd = _fd_alphas(m)
        if fd and all(a > 0 for _, a in fd):
            return Verdict("reversal", SKIP, f"not between the trunk and the domain head's input, yet "
                           f"finite differences show the gradient reaching the trunk reversed (alpha "
                           f"{_span(fd)}): the reversal stands inside the domain head or after it. "
                           "Name as domain_head the module right after the GRL (a reversal after "
                           "the head trains it against its task: see domain_head_learns)", figures,
                           unverified=True)
        adds = (f"; and the objective that steps the trunk adds the domain loss ({objective}): "
                "subtract it (GAN-style, no GRL) or reverse it with a GRL before the domain head"
                if objective else "")
        return Verdict("reversal", FAIL, "not reversed: the domain loss reaches the trunk with its "
                       "gradient unchanged (alpha -1): no GRL between the trunk and the domain "
                       "head (built but not applied, or a backward() autograd never calls)"
                       + (" (finite differences agree)" if fd else "") + adds, figures)
    negative = [(p, a) for p, a in alphas if a < 0]
    if negative:
        return Verdict("reversal", FAIL, f"wrong sign: alpha {_fmt(negative[:3])}: the reversal "
                       "is cancelled (a negative coefficient, e.g. a schedule with a negative "
                       "gamma)", figures)
    zero = [(p, a) for p, a in alphas if a == 0 and p != 0.0]
    if zero:
        return Verdict("reversal", FAIL, f"alpha is 0 at {', '.join(_p(p) for p, _ in zero)}: the "
                       "domain loss does not train the trunk there", figures)
    weighted = (f"; {objective}" if objective and any(abs(x.weight - 1.0) > x.domain.alpha_tolerance
                                                      for x in m.passes) else "")
    return Verdict("reversal", PASS, f"reversed by a GRL, alpha {_span(alphas)}{weighted}"
                   f"{_per_call(m)}{found}", figures)


def _span(values: Sequence[tuple[float | None, float]]) -> str:
    low, high = min(a for _, a in values), max(a for _, a in values)
    return f"{low:.4g}" if low == high else f"{low:.4g} .. {high:.4g}"


def schedule(m: Measurements) -> Verdict:
    """With set_progress, the measured alpha follows the user's schedule."""
    spec = m.spec
    alphas, tolerance, how = _alphas(m), max((x.domain.alpha_tolerance for x in m.passes),
                                             default=ALPHA.rtol_for()), ""
    if len(alphas) < len(m.passes) and len(_fd_alphas(m)) == len(m.passes):
        alphas, tolerance, how = _fd_alphas(m), FD_ALPHA.rtol, " (by finite differences)"
    for x in m.passes:  # each call its own alpha: the step's alphas spread that far
        if x.domain.calls_differ:
            calls = [c for c, _ in x.domain.per_call]
            tolerance = max(tolerance, (max(calls) - min(calls)) / max(abs(c) for c in calls))
            how = how or " (the mean of each step's calls)"
    figures = {"alpha": {_p(p): a for p, a in alphas}, "tolerance": tolerance}
    if any(a < 0 for _, a in alphas):
        return Verdict("schedule", SKIP, "not measured: the trunk is not trained against the "
                       "domain classifier (see reversal)", figures)
    if any(abs(x.weight) <= x.domain.alpha_tolerance for x in m.passes):
        return Verdict("schedule", SKIP, "not measured: the domain loss is not in the trunk's "
                       "objective (see reversal)", figures)
    if spec.set_progress is None:
        now = f" (alpha now {alphas[0][1]:.4g})" if alphas else ""
        return Verdict("schedule", SKIP, f"no set_progress in the spec: the schedule was not "
                       f"probed{now}", figures)
    if len(alphas) < len(m.passes):
        return Verdict("schedule", SKIP, "alpha could not be measured at every progress point "
                       "(see reversal)", figures)
    if all(abs(a + 1.0) <= tolerance for _, a in alphas):
        return Verdict("schedule", SKIP, "not measured: no reversal stands between the trunk and "
                       "the domain head (see reversal)", figures)
    if spec.alpha is not None:
        expected = [(p, spec.expected_alpha(p)) for p, _ in alphas]
        figures["expected"] = {_p(p): e for p, e in expected}
        wrong = [(p, a, e) for (p, a), (_, e) in zip(alphas, expected, strict=True)
                 if abs(a - e) > tolerance * max(abs(e), 1.0)]
        if wrong:
            p, a, e = wrong[0]
            return Verdict("schedule", FAIL, f"at {_p(p)} the GRL reverses with alpha {a:.4g}, your "
                           f"schedule gives {e:.4g} ({len(wrong)} of {len(alphas)} points off"
                           f"{how})", figures)
        return Verdict("schedule", PASS, f"alpha equals your schedule at {len(alphas)} points"
                       f"{how}: {_fmt(alphas)}", figures)
    values = [a for _, a in alphas]
    top = max(abs(a) for a in values)
    if top == 0.0:
        return Verdict("schedule", FAIL, "alpha is 0 at every progress point: the schedule never "
                       "reaches the GRL", figures)
    if max(values) - min(values) <= tolerance * top:
        coarse = ("; or the points probed lie closer together than the gradients' precision "
                  "can tell: probe earlier ones" if tolerance > ALPHA.rtol_for() else "")
        return Verdict("schedule", FAIL, f"alpha does not move: {values[0]:.4g} at every progress "
                       f"point ({', '.join(_p(p) for p, _ in alphas)}), within {tolerance:.0e}"
                       f"{how}: the schedule's value never reaches the GRL (computed but not "
                       f"passed to it?){coarse}", figures)
    ordered = sorted(alphas, key=lambda pa: pa[0])
    backwards = [(p1, a1, p2, a2) for (p1, a1), (p2, a2) in zip(ordered, ordered[1:], strict=False)
                 if a2 < a1 - tolerance * top]
    if backwards:
        p1, a1, p2, a2 = backwards[0]
        return Verdict("schedule", FAIL, f"alpha runs backwards: {a1:.4g} at {_p(p1)}, {a2:.4g} at "
                       f"{_p(p2)} (the usual schedule rises from 0 to 1; give the spec 'alpha' if "
                       "yours is meant to fall)", figures)
    return Verdict("schedule", PASS, f"alpha follows progress{how}: {_fmt(alphas)}", figures)


def label_path(m: Measurements) -> Verdict:
    """The label loss's gradient reaches the trunk unreversed."""
    spec = m.spec
    flows = [(x.progress, x.label) for x in m.passes if x.label is not None]
    if spec.label_head is None or not flows:
        missing = "label_head" if spec.label_head is None else "a 'label' loss"
        return Verdict("label_path", SKIP, f"not probed: the spec gives no {missing}")
    figures = {"coefficient": {_p(p): (f.coefficient if f.comparable else None) for p, f in flows}}
    for p, f in flows:
        if f.error:
            return Verdict("label_path", FAIL, f"the backward of the label loss raised at {_p(p)}: "
                           f"{f.error}", figures)
    if not any(f.reached and f.trunk_norm > 0 for _, f in flows):
        return Verdict("label_path", FAIL, "the label loss does not reach the trunk: the features "
                       "are detached before the label head", figures)
    for _, f in flows:
        if not f.comparable:
            return Verdict("label_path", SKIP, f"cannot compare: {f.reason}", figures,
                           unverified=True)
    for p, f in flows:
        if not f.proportional:
            return Verdict("label_path", FAIL, f"at {_p(p)} the label loss's gradient at the trunk is "
                           f"not a multiple of its gradient at the label head's input (residual "
                           f"{f.residual:.2g})", figures)
        if f.coefficient < 0:
            return Verdict("label_path", FAIL, f"the label loss reaches the trunk reversed (x"
                           f"{f.coefficient:.4g} at {_p(p)}): the reversal stands where both heads "
                           "see it (e.g. a hook or GRL on the shared features)", figures)
        if abs(f.coefficient - 1.0) > f.alpha_tolerance:
            return Verdict("label_path", FAIL, f"the label loss reaches the trunk scaled by "
                           f"{f.coefficient:.4g} at {_p(p)}, not 1", figures)
    return Verdict("label_path", PASS, "unreversed (x1)", figures)


# How close slope x weight must come to +1 for a pass (or below -this for a fail): the first-
# order prediction holds to a few percent wherever the central differences agree.
AGREEMENT = 0.75


def domain_head_learns(m: Measurements) -> Verdict:
    """The objective trains the domain head at its own task: the domain loss enters the objective
    with a positive weight, and a small step along the objective's gradient lowers it."""
    s = m.step
    figures = {"progress": s.progress, "domain_loss": s.before, "weight_in_objective": s.weight,
               "after_step_down": s.after, "after_step_up": s.opposite, "step": s.step,
               "gradient_norm": s.gradient_norm, "slope": s.slope(),
               "slope_half_step": s.slope(half=True), "jitter": s.jitter}
    name = "domain_head_learns"
    if s.trainable == 0:
        return Verdict(name, SKIP, "the domain head has no trainable parameters", figures)
    if s.error:
        return Verdict(name, FAIL, f"the backward of the objective raised: {s.error}", figures)
    figures["objective"] = s.objective
    if s.gradient_norm == 0.0:
        return Verdict(name, FAIL, f"the objective that steps the domain head ('{s.objective}') "
                       "gives it no gradient: the domain loss is not in it, or it is cut off from "
                       "the head", figures)
    if not math.isfinite(s.gradient_norm):
        return Verdict(name, FAIL, "the objective's gradient on the domain head is not finite",
                       figures)
    if s.domain_gradient_norm == 0.0:
        return Verdict(name, FAIL, "the domain loss gives the domain head's parameters no "
                       "gradient: the head's output does not reach the domain loss", figures)
    if s.weight <= 0:
        hint = ("" if s.objective == "discriminator" else
                "; if your domain head is stepped on an objective of its own (GAN-style, with its "
                "own optimizer), return that objective from losses as 'discriminator'")
        return Verdict(name, FAIL, f"the objective that steps the domain head ('{s.objective}') "
                       f"trains it against its own task: the domain loss enters it with weight "
                       f"{s.weight:.4g} (subtracted or reversed, where only the trunk's gradient "
                       f"should be){hint}", figures)
    moved = (f"domain loss {s.after:.6g} a step down the objective's gradient, {s.opposite:.6g} a "
             f"step up ({_p(s.progress)}, step {s.step:.2g})")
    if s.jitter > rounding(s.before, torch.float32):
        return Verdict(name, SKIP, f"losses is not deterministic between calls (the domain loss "
                       f"moved by {s.jitter:.2g} between two identical forwards: noise from a "
                       "generator or iterator of its own?): no small step can be trusted", figures,
                       unverified=True)
    if s.consistent and abs(s.agreement - 1.0) <= 1.0 - AGREEMENT:
        return Verdict(name, PASS, moved, figures)
    if s.consistent and s.agreement <= -AGREEMENT:
        return Verdict(name, FAIL, f"a small step along your objective's gradient raises the domain "
                       f"loss: {moved}: the gradient the head receives is reversed (a reversal after "
                       f"the domain head, alpha about {-1 / s.agreement:.3g}): the head is trained "
                       "against its own task", figures)
    return Verdict(name, SKIP, f"the domain loss's change does not follow the head's gradient at "
                   f"any step size tried (slope x weight {s.agreement:.3g}, expected 1): rounding "
                   f"or curvature, e.g. a head at its optimum on this batch: {moved}", figures,
                   unverified=True)


def optimizer(m: Measurements) -> Verdict:
    """Every trainable parameter of the trunk and the heads is in the optimizer, lr > 0."""
    spec = m.spec
    if not spec.optimizers:
        return Verdict("optimizer", SKIP, "no optimizer in the spec")
    missing, frozen = missing_from_optimizer(spec)
    figures = {"missing": missing, "lr_zero": frozen}
    if missing:
        parts = sorted({name.rsplit(".", 1)[0] for name in missing})
        return Verdict("optimizer", FAIL, f"{len(missing)} trainable parameters are not in "
                       f"{'any' if len(spec.optimizers) > 1 else 'the'} optimizer, never stepped: "
                       f"{', '.join(missing[:4])}"
                       f"{' ...' if len(missing) > 4 else ''} (in {', '.join(parts[:3])})", figures)
    if frozen:
        return Verdict("optimizer", FAIL, f"{len(frozen)} parameters are in a group with lr 0: "
                       f"{', '.join(frozen[:4])}{' ...' if len(frozen) > 4 else ''}", figures)
    several = f" (across {len(spec.optimizers)} optimizers)" if len(spec.optimizers) > 1 else ""
    return Verdict("optimizer", PASS, f"holds every trainable parameter of the trunk and heads"
                   f"{several}", figures)


CHECKS: tuple[tuple[str, Callable[[Measurements], Verdict]], ...] = (
    ("reach", reach),
    ("reversal", reversal),
    ("schedule", schedule),
    ("label_path", label_path),
    ("domain_head_learns", domain_head_learns),
    ("optimizer", optimizer),
)
