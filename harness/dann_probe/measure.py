"""The measurements at one progress point: the domain and label flows (pairing.py), the domain
loss's weight in the objective that steps the trunk, and where the pairing cannot say (the
head's input is not the trunk's output, or no reversal stands between them) a finite difference
that answers the plainer question: is the gradient autograd delivers to the trunk the true
gradient of the domain loss, or its reverse? Also where a GRL inside the domain head stands.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from grl_conformance.core.outcome import exception_line
from grl_conformance.core.tolerances import tolerance
from grl_conformance.dann_probe.pairing import Flow, compare, dense, flat, pair
from grl_conformance.dann_probe.spec import ProbeInputError, Spec
from grl_conformance.dann_probe.watch import (
    gradients,
    rounding,
    set_progress,
    watched_forward,
)

# What a finite-difference alpha is good to, and the share of the trunk's gradient the domain and
# label losses may leave unexplained before a note names other terms (core/tolerances.py).
FD_ALPHA = tolerance("probe_fd_alpha")
OTHER_TERMS = tolerance("probe_other_terms")


@dataclass
class Pass:
    """What the forwards at one progress point showed."""

    progress: float | None
    domain: Flow = field(default_factory=Flow)
    label: Flow | None = None
    fd_alpha: float | None = None  # by finite differences, where the pairing could not say
    fd_note: str = ""
    # the domain loss's weight in the objective that steps the trunk ('total'): 1 where the
    # spec gives no 'total' (the sum); negative where the objective subtracts it (GAN-style)
    weight: float = 1.0
    weight_note: str = ""

    @property
    def alpha(self) -> float | None:
        """How strongly the trunk is trained against the domain classifier: -(the reversal's
        coefficient x the domain loss's weight in the trunk's objective), element by element."""
        if not self.domain.proportional:
            return None
        return 0.0 - self.domain.coefficient * self.weight

    @property
    def fd_effective(self) -> float | None:
        return None if self.fd_alpha is None else self.fd_alpha * self.weight


def _watched(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
             key: str, head: str) -> tuple[dict[str, torch.Tensor], Flow | None]:
    """One forward from the same random state, then `key`'s flow from `head` to the trunk.
    One forward per loss: a compiled backward with donated buffers allows one backward only."""
    values, watch = watched_forward(spec, losses, reset_rng, compiled)
    if watch.not_tensor:
        raise ProbeInputError(f"the trunk ({spec.trunk.name}) returned a {watch.not_tensor}; the probe "
                              "needs the feature tensor: name the submodule that outputs it")
    if not watch.trunk:
        raise ProbeInputError(f"losses(model, batch) never called the trunk ({spec.trunk.name})")
    part = getattr(spec, head)
    if not watch.heads[head]:
        raise ProbeInputError(f"losses(model, batch) never called the {head.replace('_', ' ')} "
                              f"({part.name})")
    if key not in values:
        return values, None
    return values, compare(values[key], watch.trunk, watch.heads[head], head.replace("_", " "),
                           watch.without_grad)


def _domain_loss(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
                 shift: list | None = None) -> float:
    # with grad enabled, as in training: a model may register hooks in its forward
    return float(watched_forward(spec, losses, reset_rng, compiled, shift=shift)[0]["domain"].detach())


FD_STEPS = (1e-2, 1e-1, 1.0)  # the shift's norm relative to (loss / |g_trunk|), until it moves


def finite_difference(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
                      flow: Flow) -> tuple[float | None, str]:
    """alpha from the domain loss's true change along autograd's gradient at the trunk.

    Shifting every trunk output by `h * g / |g|` changes the domain loss by about `h * D`, D the
    true derivative along g. With a reversal of alpha between, autograd's g is -alpha times the
    true gradient, so D = -|g| / alpha and alpha = -|g| / D; without one, D = |g| (alpha -1).
    Central differences from the same random state; None (with the reason) where the loss does
    not move or losses is not deterministic."""
    grads = flow.trunk_grads  # zeros where a trunk output does not reach the loss
    norm = math.sqrt(sum(float(g.double().norm()) ** 2 for g in grads))
    if not grads or norm == 0.0 or not math.isfinite(norm):
        return None, "no gradient at the trunk to follow"
    base = _domain_loss(spec, losses, reset_rng, compiled)
    again = _domain_loss(spec, losses, reset_rng, compiled)
    if abs(base - again) > rounding(base, torch.float32):
        return None, f"losses is not deterministic between calls ({base:.6g} vs {again:.6g})"
    noise = 4 * rounding(base, torch.float32)
    for relative in FD_STEPS:
        h = relative * max(abs(base), 1e-6) / norm
        shift = [g * (h / norm) for g in grads]
        up = _domain_loss(spec, losses, reset_rng, compiled, shift)
        down = _domain_loss(spec, losses, reset_rng, compiled, [-s for s in shift])
        if abs(up - down) > noise:
            derivative = (up - down) / (2 * h)
            return -norm / derivative + 0.0, (f"finite differences: the domain loss moves "
                                              f"{down:.6g} -> {up:.6g} along the trunk's gradient")
    return None, "the domain loss does not move along the trunk's gradient"


def measure(spec: Spec, losses: Callable, progress: float | None, reset_rng: Callable[[], None],
            compiled: bool = False) -> Pass:
    """The watched forwards at `progress` (after `set_progress(progress)` where given)."""
    set_progress(spec, progress)
    values, domain = _watched(spec, losses, reset_rng, compiled, "domain", "domain_head")
    result = Pass(progress, domain)
    if spec.label_head is not None and "label" in values:
        result.label = _watched(spec, losses, reset_rng, compiled, "label", "label_head")[1]
    if domain.reached and domain.trunk_norm > 0 and domain.finite and (
            domain.unreversed or (not domain.comparable and domain.reason)):
        result.fd_alpha, result.fd_note = finite_difference(spec, losses, reset_rng, compiled, domain)
    if "total" in values.given and domain.reached and domain.trunk_norm > 0 and domain.finite:
        result.weight, result.weight_note = trunk_weight(spec, losses, reset_rng, compiled, domain,
                                                         result.label)
    domain.trunk_grads = []
    if result.label is not None:
        result.label.trunk_grads = []
    return result


def trunk_weight(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
                 domain: Flow, label: Flow | None) -> tuple[float, str]:
    """The domain loss's weight in the objective that steps the trunk ('total'), relative to
    the label loss's where there is one, from their gradients at the trunk's output: `g_total ~=
    w g_domain + v g_label`, least squares, then w / v. 1 for label + domain through a GRL (or
    their mean); -lambda where the objective subtracts the domain loss (adversarial training
    without a GRL: DomainBed's DANN, GAN-style loops)."""
    values, watch = watched_forward(spec, losses, reset_rng, compiled)
    try:
        g_total = gradients(values["total"], watch.trunk)
    except Exception as exc:  # noqa: BLE001 - the model's own failure, reported
        return 1.0, f"the objective's backward raised {exception_line(exc)}"
    if len(g_total) != len(domain.trunk_grads):
        return 1.0, "the trunk ran a different number of times for the objective"
    total = torch.cat([flat(g) for g in dense(watch.trunk, g_total)])
    basis = [torch.cat([flat(g) for g in domain.trunk_grads])]
    if label is not None and label.trunk_grads and len(label.trunk_grads) == len(domain.trunk_grads):
        lab = torch.cat([flat(g) for g in label.trunk_grads])
        if bool(lab.ne(0).any()):
            basis.append(lab)
    a = torch.stack(basis, dim=1)
    if not bool(a.isfinite().all()) or not bool(total.isfinite().all()):
        return 1.0, "non-finite gradients"
    solution = torch.linalg.lstsq(a, total.unsqueeze(1)).solution.squeeze(1)
    weight = float(solution[0]) + 0.0
    if len(basis) > 1 and float(solution[1]) > 0:
        weight /= float(solution[1])  # relative to the label loss's: (L_y - lambda L_d) / 3 is lambda
    rest = float((total - a @ solution).norm())
    share = rest / float(total.norm()) if rest else 0.0
    note = (f"trunk objective = {_objective(solution, len(basis) > 1)}"
            + ("" if OTHER_TERMS.holds(rest, float(total.norm())) else
               f" + other terms ({share:.0%} of its gradient at the trunk)"))
    return weight, note


def _objective(solution: torch.Tensor, with_label: bool) -> str:
    w = float(solution[0])
    text = f"{'-' if w < 0 else ''}{abs(w):.4g} x domain"
    if with_label:
        v = float(solution[1])
        text = f"{v:.4g} x label {'-' if w < 0 else '+'} {abs(w):.4g} x domain"
    return text


def locate_reversal(spec: Spec, losses: Callable, progress: float | None,
                    reset_rng: Callable[[], None], compiled: bool = False) -> str:
    """Where the spec's domain head holds the GRL (3 of 9 public setups: the discriminator's
    forward reverses first), measure at the module right after the reversal instead: the first
    module inside the head, in call order, whose input is the trunk's output with the gradient
    multiplied by something other than 1. Re-points `spec.domain_head`; returns what it did."""
    head = spec.domain_head
    inside = [(f"inside:{n}", m) for n, m in head.module.named_modules() if n]
    if not inside:
        return ""
    set_progress(spec, progress)
    values, watch = watched_forward(spec, losses, reset_rng, compiled, inside=inside)
    names = ["domain_head", *[k for k in watch.inside_order if k.startswith("inside:")]]
    tensors = [t for k in names for t in watch.heads[k]]
    if not watch.trunk or not watch.heads["domain_head"]:
        return ""
    try:
        grads = gradients(values["domain"], watch.trunk + tensors)
    except Exception:  # noqa: BLE001 - the measurement itself reports the backward's failure
        return ""
    g_trunk, g_rest, flows = grads[:len(watch.trunk)], grads[len(watch.trunk):], {}
    at = 0
    for key in names:
        n = len(watch.heads[key])
        flows[key] = pair(values["domain"], watch.trunk, g_trunk, watch.heads[key],
                          g_rest[at:at + n], key)
        at += n
    if not flows["domain_head"].unreversed:
        return ""  # the reversal (or its absence) is already between the trunk and the head
    for key in names[1:]:
        flow = flows[key]
        if flow.proportional and not flow.unreversed:
            spec.named_domain_head = head
            spec.domain_head = type(head)(dict(inside)[key], f"{head.name}.{key[len('inside:'):]}")
            return spec.found_in_head
    return ""
