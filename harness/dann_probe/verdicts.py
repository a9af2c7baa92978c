"""The probe's named checks: what the measurements say about the wiring, in a DANN user's words.

Each check is a function of the measurements (the passes at each progress point, the step on the
domain head, the spec) returning a `Verdict`; `CHECKS` is their order in every report. The ids
are part of the probe's JSON format (docs/probe.md).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from grl_conformance.core.outcome import FAIL, PASS, SKIP
from grl_conformance.dann_probe.measure import Pass, Step, missing_from_optimizer
from grl_conformance.dann_probe.spec import Spec

# How close measured alphas must be to call a schedule flat, or to the user's own formula.
ALPHA_RELATIVE_TOLERANCE = 1e-4


@dataclass
class Verdict:
    check: str
    status: str
    summary: str
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"check": self.check, "status": self.status, "summary": self.summary,
                "figures": self.figures}


@dataclass
class Measurements:
    spec: Spec
    passes: list[Pass]
    step: Step


def _p(progress: float | None) -> str:
    return "now" if progress is None else f"p={progress:g}"


def _alphas(m: Measurements) -> list[tuple[float | None, float]]:
    return [(x.progress, 0.0 - x.domain.coefficient) for x in m.passes if x.domain.proportional]


def _fmt(values: Sequence[tuple[float | None, float]]) -> str:
    return ", ".join(f"{a:.4g} at {_p(p)}" for p, a in values)


def reach(m: Measurements) -> Verdict:
    """The domain loss's gradient reaches the trunk's output (not missing, not zero everywhere)."""
    figures = {"trunk_grad_norm": {_p(x.progress): x.domain.trunk_norm for x in m.passes}}
    errors = [x for x in m.passes if x.domain.error]
    if errors:
        return Verdict("reach", FAIL, f"the backward of the domain loss raised at "
                       f"{_p(errors[0].progress)}: {errors[0].domain.error}", figures)
    if not any(x.domain.reached for x in m.passes):
        where = ("the domain head's input carries no gradient: the features are detached (or "
                 "computed under no_grad) before the domain head"
                 if all(x.domain.head_detached for x in m.passes)
                 else "it stops between the domain head and the trunk: the features are detached "
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
    """The gradient at the trunk is -alpha times the gradient at the domain head's input, alpha > 0."""
    rows = [{"progress": x.progress, "alpha": -x.domain.coefficient if x.domain.comparable else None,
             "residual": x.domain.residual if x.domain.comparable else None}
            for x in m.passes]
    figures = {"measured": rows}
    if not any(x.domain.reached and x.domain.trunk_norm > 0 for x in m.passes):
        return Verdict("reversal", SKIP, "not measured: no gradient of the domain loss reaches the "
                       "trunk (see reach)", figures)
    blocked = [x for x in m.passes if not x.domain.comparable and x.domain.reason]
    if blocked:
        return Verdict("reversal", SKIP, f"cannot compare: {blocked[0].domain.reason}", figures)
    off = [x for x in m.passes if x.domain.comparable and not x.domain.proportional]
    if off:
        x = off[0]
        return Verdict("reversal", FAIL, f"at {_p(x.progress)} the gradient at the trunk is not a "
                       f"multiple of the gradient at the domain head's input (residual "
                       f"{x.domain.residual:.2g}, tolerance {x.domain.tolerance:.0e}): a GRL whose "
                       "backward is not -alpha * grad, or the domain loss reaches the trunk by a "
                       "second route", figures)
    alphas = _alphas(m)
    if all(abs(a + 1.0) <= 1e-6 for _, a in alphas):
        return Verdict("reversal", FAIL, "not reversed: the domain loss reaches the trunk with its "
                       "gradient unchanged (alpha -1): no GRL between the trunk and the domain "
                       "head (built but not applied, a backward() autograd never calls, or placed "
                       "after the domain head)", figures)
    negative = [(p, a) for p, a in alphas if a < 0]
    if negative:
        return Verdict("reversal", FAIL, f"wrong sign: alpha {_fmt(negative[:3])}: the reversal "
                       "is cancelled (a negative coefficient, e.g. a schedule with a negative "
                       "gamma)", figures)
    zero = [(p, a) for p, a in alphas if a == 0 and p != 0.0]
    if zero:
        return Verdict("reversal", FAIL, f"alpha is 0 at {', '.join(_p(p) for p, _ in zero)}: the "
                       "domain loss does not train the trunk there", figures)
    low, high = min(a for _, a in alphas), max(a for _, a in alphas)
    span = f"{low:.4g}" if low == high else f"{low:.4g} .. {high:.4g}"
    return Verdict("reversal", PASS, f"reversed, alpha {span}", figures)


def schedule(m: Measurements) -> Verdict:
    """With set_progress, the measured alpha follows the user's schedule."""
    spec = m.spec
    alphas = _alphas(m)
    figures = {"alpha": {_p(p): a for p, a in alphas}}
    if spec.set_progress is None:
        now = f" (alpha now {alphas[0][1]:.4g})" if alphas else ""
        return Verdict("schedule", SKIP, f"no set_progress in the spec: the schedule was not "
                       f"probed{now}", figures)
    if len(alphas) < len(m.passes):
        return Verdict("schedule", SKIP, "alpha could not be measured at every progress point "
                       "(see reversal)", figures)
    if all(abs(a + 1.0) <= 1e-6 for _, a in alphas):
        return Verdict("schedule", SKIP, "not measured: no reversal stands between the trunk and "
                       "the domain head (see reversal)", figures)
    if spec.alpha is not None:
        expected = [(p, float(spec.alpha(p))) for p, _ in alphas]
        figures["expected"] = {_p(p): e for p, e in expected}
        wrong = [(p, a, e) for (p, a), (_, e) in zip(alphas, expected, strict=True)
                 if abs(a - e) > ALPHA_RELATIVE_TOLERANCE * max(abs(e), 1.0)]
        if wrong:
            p, a, e = wrong[0]
            return Verdict("schedule", FAIL, f"at {_p(p)} the GRL reverses with alpha {a:.4g}, your "
                           f"schedule gives {e:.4g} ({len(wrong)} of {len(alphas)} points off)",
                           figures)
        return Verdict("schedule", PASS, f"alpha equals your schedule at {len(alphas)} points: "
                       f"{_fmt(alphas)}", figures)
    values = [a for _, a in alphas]
    top = max(abs(a) for a in values)
    if top == 0.0:
        return Verdict("schedule", FAIL, "alpha is 0 at every progress point: the schedule never "
                       "reaches the GRL", figures)
    if max(values) - min(values) <= ALPHA_RELATIVE_TOLERANCE * top:
        return Verdict("schedule", FAIL, f"alpha does not move: {values[0]:.4g} at every progress "
                       f"point ({', '.join(_p(p) for p, _ in alphas)}): the schedule's value never "
                       "reaches the GRL (computed but not passed to it?)", figures)
    ordered = sorted(alphas, key=lambda pa: pa[0])
    backwards = [(p1, a1, p2, a2) for (p1, a1), (p2, a2) in zip(ordered, ordered[1:], strict=False)
                 if a2 < a1 - ALPHA_RELATIVE_TOLERANCE * top]
    if backwards:
        p1, a1, p2, a2 = backwards[0]
        return Verdict("schedule", FAIL, f"alpha runs backwards: {a1:.4g} at {_p(p1)}, {a2:.4g} at "
                       f"{_p(p2)} (the usual schedule rises from 0 to 1; give the spec 'alpha' if "
                       "yours is meant to fall)", figures)
    return Verdict("schedule", PASS, f"alpha follows progress: {_fmt(alphas)}", figures)


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
            return Verdict("label_path", SKIP, f"cannot compare: {f.reason}", figures)
    for p, f in flows:
        if not f.proportional:
            return Verdict("label_path", FAIL, f"at {_p(p)} the label loss's gradient at the trunk is "
                           f"not a multiple of its gradient at the label head's input (residual "
                           f"{f.residual:.2g})", figures)
        if f.coefficient < 0:
            return Verdict("label_path", FAIL, f"the label loss reaches the trunk reversed (x"
                           f"{f.coefficient:.4g} at {_p(p)}): the reversal stands where both heads "
                           "see it (e.g. a hook or GRL on the shared features)", figures)
        if abs(f.coefficient - 1.0) > ALPHA_RELATIVE_TOLERANCE:
            return Verdict("label_path", FAIL, f"the label loss reaches the trunk scaled by "
                           f"{f.coefficient:.4g} at {_p(p)}, not 1", figures)
    return Verdict("label_path", PASS, "unreversed (x1)", figures)


def domain_head_learns(m: Measurements) -> Verdict:
    """A small step along the objective's gradient on the domain head lowers the domain loss."""
    s = m.step
    figures = {"progress": s.progress, "domain_loss_before": s.before,
               "after_step_down": s.after, "after_step_up": s.opposite, "step": s.step,
               "gradient_norm": s.gradient_norm}
    if s.trainable == 0:
        return Verdict("domain_head_learns", SKIP, "the domain head has no trainable parameters",
                       figures)
    if s.gradient_norm == 0.0:
        return Verdict("domain_head_learns", FAIL, "the objective gives the domain head no gradient: "
                       "the domain loss is not in the objective ('total'), or it is cut off from "
                       "the head", figures)
    if not math.isfinite(s.gradient_norm):
        return Verdict("domain_head_learns", FAIL, "the objective's gradient on the domain head is "
                       "not finite", figures)
    moved = f"domain loss {s.before:.6g} -> {s.after:.6g} ({_p(s.progress)}, step {s.step:.2g})"
    if s.after < s.before:
        return Verdict("domain_head_learns", PASS, moved, figures)
    if s.after > s.before:
        return Verdict("domain_head_learns", FAIL, f"a small step along your objective's gradient "
                       f"raises the domain loss: {moved}: the domain head is trained against its own "
                       "task (a subtracted domain loss, or a reversal after the domain head)", figures)
    return Verdict("domain_head_learns", SKIP, f"the domain loss did not move: {moved}", figures)


def optimizer(m: Measurements) -> Verdict:
    """Every trainable parameter of the trunk and the heads is in the optimizer, lr > 0."""
    spec = m.spec
    if spec.optimizer is None:
        return Verdict("optimizer", SKIP, "no optimizer in the spec")
    missing, frozen = missing_from_optimizer(spec)
    figures = {"missing": missing, "lr_zero": frozen}
    if missing:
        parts = sorted({name.rsplit(".", 1)[0] for name in missing})
        return Verdict("optimizer", FAIL, f"{len(missing)} trainable parameters are not in the "
                       f"optimizer, never stepped: {', '.join(missing[:4])}"
                       f"{' ...' if len(missing) > 4 else ''} (in {', '.join(parts[:3])})", figures)
    if frozen:
        return Verdict("optimizer", FAIL, f"{len(frozen)} parameters are in a group with lr 0: "
                       f"{', '.join(frozen[:4])}{' ...' if len(frozen) > 4 else ''}", figures)
    return Verdict("optimizer", PASS, "holds every trainable parameter of the trunk and heads",
                   figures)


CHECKS: tuple[tuple[str, Callable[[Measurements], Verdict]], ...] = (
    ("reach", reach),
    ("reversal", reversal),
    ("schedule", schedule),
    ("label_path", label_path),
    ("domain_head_learns", domain_head_learns),
    ("optimizer", optimizer),
)
