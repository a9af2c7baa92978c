"""What a training step would do: the domain head stepped a little along its own objective
(does the domain loss fall?), and which trainable parameters the optimizers would step."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from grl_conformance.core.outcome import exception_line
from grl_conformance.core.tolerances import tolerance
from grl_conformance.dann_probe.spec import ProbeInputError, Spec
from grl_conformance.dann_probe.watch import (
    rounding,
    run_losses,
)

# A slope (in units of the gradient's norm) of first-order size: below it rounding, above it
# curvature could decide its sign; and how far the slope at half the step may differ.
FIRST_ORDER = (0.1, 10.0)
HALF_STEP = tolerance("probe_half_step")


@dataclass
class Step:
    """The domain loss at a small step either way along the objective's gradient on the domain
    head's parameters (a fresh forward each time), and how the objective weighs the domain loss."""

    trainable: int = 0
    gradient_norm: float = 0.0
    step: float = 0.0
    before: float = math.nan
    after: float = math.nan       # at theta - step * g / |g|
    opposite: float = math.nan    # at theta + step * g / |g|
    progress: float | None = None
    jitter: float = 0.0           # the domain loss's change between two identical forwards
    error: str = ""

    half_after: float = math.nan     # the same at half the step
    half_opposite: float = math.nan
    # the domain loss's weight in the objective, as the head's gradients show it:
    # <g_total, g_domain> / |g_domain|^2 (1 for total = label + domain; < 0 when subtracted)
    weight: float = math.nan
    domain_gradient_norm: float = 0.0
    # the objective the head is stepped on: 'discriminator' where losses gives one, else 'total'
    objective: str = "total"

    @property
    def agreement(self) -> float:
        """slope x weight: +1 when the gradient the head receives is the domain loss's true
        one; -1/alpha when a reversal after the head flips it; anything else is rounding."""
        return self.slope() * self.weight

    def slope(self, half: bool = False) -> float:
        """The central difference (L(+h) - L(-h)) / 2h along g / |g|, in units of |g|: +1 when
        the objective's gradient on the head is the domain loss's own, about -1/alpha when
        reversed (a subtracted domain loss, a reversal after the head)."""
        h = self.step / 2 if half else self.step
        up, down = (self.half_opposite, self.half_after) if half else (self.opposite, self.after)
        return (up - down) / (2 * h * self.gradient_norm) if h and self.gradient_norm else math.nan

    @property
    def consistent(self) -> bool:
        """The slope has first-order size (0.1 to 10) and the same at half the step (25%):
        neither rounding nor curvature decides its sign."""
        full, half = self.slope(), self.slope(half=True)
        low, high = FIRST_ORDER
        return (all(math.isfinite(v) and low <= abs(v) <= high for v in (full, half))
                and HALF_STEP.holds(abs(full - half), max(abs(full), abs(half))))


# The step's predicted change of the loss, relative to the loss, tried in turn until the loss
# moves beyond rounding: small first, so curvature cannot swamp the first-order change.
STEP_CHANGES = (1e-4, 1e-3, 1e-2, 1e-1)


def step_domain_head(spec: Spec, losses: Callable, progress: float | None,
                     reset_rng: Callable[[], None], restore: Callable[[], None]) -> Step:
    params = [p for p in spec.domain_head.module.parameters() if p.requires_grad]
    result = Step(trainable=len(params), progress=progress)
    if not params:
        return result
    objective = "discriminator"  # the head's own objective; 'total' where the spec gives none
    def head_grads(key: str):
        reset_rng()
        values = run_losses(spec, losses)
        if key == objective and "discriminator" in values.given:
            result.objective = "discriminator"
        loss = values[key]
        grads = (torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad
                 else [None] * len(params))
        return float(values["domain"].detach()), [torch.zeros_like(p) if g is None else g.detach()
                                                  for p, g in zip(params, grads, strict=True)]

    try:  # one forward each: a compiled backward allows one backward per graph
        result.before, grads = head_grads(objective)
        again, domain_grads = head_grads("domain")
    except ProbeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own failure, reported
        result.error = exception_line(exc)
        return result
    norm = math.sqrt(sum(float(g.double().norm()) ** 2 for g in grads))
    result.gradient_norm = norm
    result.jitter = abs(again - result.before)
    dd = sum(float((g.double() * g.double()).sum()) for g in domain_grads)
    result.domain_gradient_norm = math.sqrt(dd)
    if dd:
        result.weight = sum(float((g.double() * d.double()).sum())
                            for g, d in zip(grads, domain_grads, strict=True)) / dd
    if norm == 0.0 or not math.isfinite(norm) or not dd or result.weight <= 0:
        return result
    if result.jitter > rounding(result.before, torch.float32):
        return result  # not deterministic: no step can be trusted (the verdict says so)

    def domain_at(sign: float, h: float) -> float:
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=sign * h / norm)
        try:
            reset_rng()
            return float(run_losses(spec, losses)["domain"].detach())
        finally:
            restore()

    for change in STEP_CHANGES:
        result.step = change * max(abs(result.before), 1e-6) / norm
        result.after = domain_at(-1.0, result.step)
        result.opposite = domain_at(1.0, result.step)
        result.half_after = domain_at(-1.0, result.step / 2)
        result.half_opposite = domain_at(1.0, result.step / 2)
        if result.consistent:
            break
    return result


def missing_from_optimizer(spec: Spec) -> tuple[list[str], list[str]]:
    """Trainable parameters of the trunk and the heads the optimizer does not hold, and those
    it holds in a group whose learning rate is 0 (qualified names)."""
    held: dict[int, float] = {}
    for optimizer in spec.optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                lr = float(group.get("lr", math.nan))  # a tensor lr reads as its value
                held[id(p)] = max(lr, held.get(id(p), lr))
    missing, frozen = [], []
    seen = set()
    for part in (spec.trunk, spec.named_domain_head or spec.domain_head, spec.label_head):
        if part is None:
            continue
        for name, p in part.module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            qualified = f"{part.name}.{name}"
            if id(p) not in held:
                missing.append(qualified)
            elif held[id(p)] == 0.0:
                frozen.append(qualified)
    return missing, frozen
