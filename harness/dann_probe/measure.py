"""Watched forwards of the user's losses: the gradients at the trunk's output and at the heads' inputs.

The trunk may run several times per step (source and target batches) and the domain head may
see those outputs one by one or concatenated, in any order. Every tensor the trunk outputs is
laid end to end in one flat "trunk space"; each head input is found in it by value (a GRL's
forward is the identity, so the head's input holds the very numbers the trunk output, reshaped
or concatenated), which tells which gradient element at the head belongs to which at the trunk.
Then one loss's gradient at the trunk is compared with its gradient at the head's input:
`g_trunk = c * g_head`, with `c = -alpha` on the domain path and `c = 1` on the label path.

Where that pairing cannot say (the head's input is not the trunk's output, or no reversal
stands between them), a finite difference answers the plainer question: is the gradient that
autograd delivers to the trunk the true gradient of the domain loss, or its reverse?
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from grl_conformance.core.tolerances import tolerance
from grl_conformance.dann_probe.spec import ProbeInputError, Spec, last_line

# How far `g_trunk` may be from `c * g_head` (relative to |g_trunk|), how precisely a measured
# alpha is held to a formula, and what a finite-difference alpha is good to: the harness's one
# tolerance table (core/tolerances.py), per dtype where it depends on the gradients' precision.
RESIDUAL = tolerance("probe_residual")
ALPHA = tolerance("probe_alpha")
FD_ALPHA = tolerance("probe_fd_alpha")
OTHER_TERMS = tolerance("probe_other_terms")
LOSS_ROUNDING = tolerance("probe_loss_rounding")


@dataclass
class Flow:
    """One loss's gradient at the trunk's output against its gradient at one head's input."""

    reached: bool = False          # some gradient arrives at the trunk's output
    finite: bool = True
    trunk_norm: float = 0.0
    head_detached: bool = False    # the head's input carries no gradient at all
    trunk_without_grad: bool = False  # the trunk's own output carries none (no_grad, detach)
    comparable: bool = False
    reason: str = ""               # why not comparable
    coefficient: float = math.nan  # g_trunk ~= coefficient * g_head
    residual: float = math.nan     # |g_trunk - c g_head| / |g_trunk|
    tolerance: float = 0.0
    alpha_tolerance: float = ALPHA.rtol_for(torch.float32)
    error: str = ""                # the backward raised
    trunk_grads: list = field(default_factory=list, repr=False)  # per trunk output, for the FD probe
    # per trunk output (one per trunk call, in call order): (coefficient, residual) where the
    # head gets a gradient from it; a GRL whose coefficient steps on each call gives each call
    # its own multiple, and no single one fits them all
    per_call: list = field(default_factory=list)

    @property
    def proportional(self) -> bool:
        return self.comparable and (self.residual <= self.tolerance or self.proportional_per_call)

    @property
    def unreversed(self) -> bool:
        """The gradient arrives unchanged: a multiple of 1 (no reversal stands between)."""
        return self.proportional and abs(self.coefficient - 1.0) <= self.alpha_tolerance

    @property
    def proportional_per_call(self) -> bool:
        """Each call's gradient is a multiple of its own, all of one sign, though no one
        multiple fits them all (the alpha of each call differs)."""
        return (self.comparable and len(self.per_call) > 1
                and all(r <= self.tolerance for _, r in self.per_call)
                and len({c > 0 for c, _ in self.per_call}) == 1)

    @property
    def calls_differ(self) -> bool:
        coefficients = [c for c, _ in self.per_call]
        return (self.proportional_per_call and max(coefficients) - min(coefficients)
                > self.alpha_tolerance * max(abs(c) for c in coefficients))


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


def _trainable(module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class _Watch:
    """Forward hooks recording the trunk's outputs and the heads' first tensor inputs; `shift`
    (one tensor per trunk call) is added to the trunk's outputs for a finite difference."""

    def __init__(self, spec: Spec, compiled: bool, shift: list | None = None,
                 inside: list | None = None) -> None:
        self.trunk: list[torch.Tensor] = []
        self.heads: dict[str, list[torch.Tensor]] = {"domain_head": [], "label_head": []}
        self.inside_order: list[str] = []  # `inside` modules (name, module), in first-call order
        self.not_tensor = ""
        self.without_grad = 0
        self.shift = shift
        self.frozen_trunk = not _trainable(spec.trunk.module)
        wrap = torch.compiler.disable if compiled else (lambda fn: fn)
        self.handles = [spec.trunk.module.register_forward_hook(wrap(self._on_trunk))]
        for key in ("domain_head", "label_head"):
            part = getattr(spec, key)
            if part is not None:
                self.handles.append(part.module.register_forward_pre_hook(
                    wrap(self._on_head(key)), with_kwargs=True))
        for name, module in inside or ():
            self.heads[name] = []
            self.handles.append(module.register_forward_pre_hook(
                wrap(self._on_head(name)), with_kwargs=True))

    def _on_trunk(self, module, args, output):
        """Every floating-point tensor the trunk returns (a tensor, or a tuple, list or dict of
        them: features and logits, say) is a trunk output."""
        from torch.utils._pytree import tree_flatten, tree_unflatten

        leaves, structure = tree_flatten(output)
        found = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor) and v.is_floating_point()]
        if not found:
            self.not_tensor = type(output).__name__
            return None
        changed = False
        for i in found:
            tensor = leaves[i]
            if not tensor.requires_grad:
                if self.frozen_trunk and torch.is_grad_enabled():
                    # a frozen trunk: make its output a leaf whose gradient can still be read
                    tensor, changed = tensor.detach().requires_grad_(True), True
                else:  # no_grad or detach inside a trainable trunk: the mistake itself
                    self.without_grad += 1
            if self.shift is not None and len(self.trunk) < len(self.shift):
                shift = self.shift[len(self.trunk)].reshape(tensor.shape).to(tensor.dtype)
                tensor, changed = tensor + shift, True
            leaves[i] = tensor
            self.trunk.append(tensor)
        if not changed:
            return None
        return leaves[0] if isinstance(output, torch.Tensor) else tree_unflatten(leaves, structure)

    def _on_head(self, key: str):
        def record(module, args, kwargs):
            """The head's first tensor input, given to the head as a private alias (`view_as`):
            its gradient is the head's own, before any hook on the shared features."""
            if key not in self.inside_order:
                self.inside_order.append(key)
            for i, value in enumerate(args):
                if isinstance(value, torch.Tensor):
                    alias = value.view_as(value)
                    self.heads[key].append(alias)
                    return (*args[:i], alias, *args[i + 1:]), kwargs
            for name, value in kwargs.items():
                if isinstance(value, torch.Tensor):
                    alias = value.view_as(value)
                    self.heads[key].append(alias)
                    return args, {**kwargs, name: alias}
            return None

        return record

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _scalar(value, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ProbeInputError(f"losses(model, batch)[{key!r}] is {type(value).__name__}, expected a "
                              "scalar tensor")
    if value.numel() != 1 or value.dim() > 1:
        raise ProbeInputError(f"losses(model, batch)[{key!r}] has shape {list(value.shape)}, "
                              "expected a scalar (reduce it: .mean() or .sum())")
    if not value.is_floating_point():
        raise ProbeInputError(f"losses(model, batch)[{key!r}] is a {value.dtype} tensor: a loss "
                              "that can carry a gradient is a floating-point one")
    return value.reshape(())


def _grad_marks(model) -> list:
    return [(id(p.grad), p.grad._version if p.grad is not None else -1) for p in model.parameters()]


LOSS_KEYS = ("domain", "label", "total", "discriminator")


class Losses(dict):
    """The losses by key, and which keys the user's function gave (`given`)."""

    given: frozenset = frozenset()


def run_losses(spec: Spec, losses: Callable) -> Losses:
    """Call the user's losses and check what comes back; `total` (the objective that steps the
    trunk) defaults to the sum of domain and label, `discriminator` (the one that steps the
    domain head) to `total`."""
    marks = _grad_marks(spec.model)
    try:
        out = losses(spec.model, spec.batch)
    except ProbeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: one line, exit 2
        raise ProbeInputError(f"losses(model, batch) raised {last_line(exc)}") from None
    if _grad_marks(spec.model) != marks:
        raise ProbeInputError("losses(model, batch) changed a parameter's .grad: it must compute "
                              "the losses only, without calling backward() or stepping")
    if not isinstance(out, Mapping):
        raise ProbeInputError(f"losses(model, batch) returned {type(out).__name__}, expected a dict "
                              "with 'domain' (and optionally 'label', 'total', 'discriminator')")
    if "domain" not in out:
        raise ProbeInputError(f"losses(model, batch) returned keys {sorted(map(str, out))}: "
                              "'domain' (the domain-classification loss) is required")
    unknown = sorted(str(k) for k in set(out) - set(LOSS_KEYS))
    if unknown:
        raise ProbeInputError(f"losses(model, batch) returned unknown keys {unknown}; expected "
                              f"{', '.join(map(repr, LOSS_KEYS))}")
    result = Losses({k: _scalar(v, k) for k, v in out.items()})
    result.given = frozenset(result)
    if "total" not in result:
        result["total"] = sum(result[k] for k in ("domain", "label") if k in result)
    if "discriminator" not in result:
        result["discriminator"] = result["total"]
    return result


def _grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """d loss / d each tensor (None where it does not depend on it); no `.grad` is touched."""
    wanted = {}
    for t in tensors:
        if t.requires_grad:
            wanted.setdefault(id(t), t)
    found: dict[int, torch.Tensor | None] = {}
    if wanted and loss.requires_grad:
        grads = torch.autograd.grad(loss, list(wanted.values()), allow_unused=True)
        found = dict(zip(wanted, grads, strict=True))
    return [found.get(id(t)) for t in tensors]


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).to(torch.float64)


def _place(space: torch.Tensor, starts: list[int], sizes: list[int], gt: torch.Tensor,
           head: torch.Tensor) -> list[tuple[int, int, int]] | None:
    """Where the head's input stands in trunk space, as (head offset, space offset, length)
    segments: one run of numbers starting at a trunk output's start or ending at one's end (a
    whole output, reshaped; a prefix or suffix; several in call order), else whole outputs in
    any order. Among equal candidates, one where the loss's gradient arrives wins."""
    flat = head.detach().reshape(-1)
    n = flat.numel()

    def equal(at: int, length: int, offset: int = 0) -> bool:
        return (0 <= at and at + length <= space.numel()
                and torch.equal(space[at:at + length].to(flat.dtype), flat[offset:offset + length]))

    def carries(at: int, length: int) -> bool:
        return bool(gt[at:at + length].ne(0).any())

    ends = [s + k for s, k in zip(starts, sizes, strict=True)]
    found = [s for s in sorted({*starts, *(e - n for e in ends)}) if equal(s, n)]
    if found:
        return [(0, next((s for s in found if carries(s, n)), found[0]), n)]
    segments, offset, used = [], 0, set()
    while offset < n:
        options = [i for i, (s, k) in enumerate(zip(starts, sizes, strict=True))
                   if i not in used and 0 < k <= n - offset and equal(s, k, offset)]
        if not options:
            return None
        i = next((i for i in options if carries(starts[i], sizes[i])), options[0])
        used.add(i)
        segments.append((offset, starts[i], sizes[i]))
        offset += sizes[i]
    return segments


def _shapes(tensors: list[torch.Tensor]) -> str:
    shapes = sorted({str(list(t.shape)) for t in tensors})
    return ", ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "")


def compare(loss: torch.Tensor, trunk: list[torch.Tensor], heads: list[torch.Tensor],
            head_name: str, without_grad: int = 0) -> Flow:
    """The flow of `loss`'s gradient from one head's input back to the trunk's output."""
    try:
        grads = _grads(loss, trunk + heads)
    except Exception as exc:  # noqa: BLE001 - a backward that raises is the model's own failure
        return Flow(trunk_without_grad=without_grad > 0, error=last_line(exc))
    return pair(loss, trunk, grads[:len(trunk)], heads, grads[len(trunk):], head_name, without_grad)


def pair(loss: torch.Tensor, trunk: list[torch.Tensor], g_trunk: list, heads: list[torch.Tensor],
         g_heads: list, head_name: str, without_grad: int = 0) -> Flow:
    """`g_trunk ~= c * g_head` for the gradients of one loss (`compare` takes them)."""
    flow = Flow(trunk_without_grad=without_grad > 0)
    flow.trunk_grads = _dense(trunk, g_trunk)
    sizes = [t.numel() for t in trunk]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    space = torch.cat([_flat(t) for t in trunk]) if trunk else torch.zeros(0, dtype=torch.float64)
    gt = torch.cat([_flat(g) for g in flow.trunk_grads]) if trunk else space
    gh = torch.zeros_like(space)
    flow.reached = any(g is not None for g in g_trunk)
    flow.finite = bool(gt.isfinite().all()) and bool(loss.detach().isfinite())
    flow.trunk_norm = float(gt.norm())
    flow.head_detached = all(g is None for g in g_heads)
    dtypes = [t.dtype for t in trunk + heads if t.is_floating_point()]
    flow.tolerance = RESIDUAL.loosest(dtypes)
    flow.alpha_tolerance = ALPHA.loosest(dtypes)
    unplaced = []
    for head, g in zip(heads, g_heads, strict=True):
        segments = _place(space, starts, sizes, gt, head)
        if segments is None:
            if g is not None and bool(g.ne(0).any()):
                unplaced.append(head)
            continue
        if g is not None:
            fg = _flat(g)
            for offset, at, length in segments:
                gh[at:at + length] += fg[offset:offset + length]
    if unplaced:
        flow.reason = (f"the {head_name}'s input ({_shapes(unplaced)}) is not the trunk's output "
                       f"({_shapes(trunk)}) reshaped or concatenated: something other than a GRL "
                       "and a reshape stands between them")
        return flow
    if not flow.finite or not bool(gh.isfinite().all()):
        flow.reason = "non-finite loss or gradient (nan or inf)"
        return flow
    hh = float(gh @ gh)
    if hh == 0.0:
        flow.reason = f"the loss gives the {head_name}'s input no gradient"
        return flow
    flow.comparable = True
    flow.coefficient, flow.residual = _multiple(gt, gh)
    if flow.residual > flow.tolerance:
        for start, size in zip(starts, sizes, strict=True):
            part = gh[start:start + size]
            if bool(part.ne(0).any()):
                flow.per_call.append(_multiple(gt[start:start + size], part))
    return flow


def _dense(tensors: list[torch.Tensor], grads: list) -> list[torch.Tensor]:
    """Each gradient detached, zeros where the loss does not depend on that tensor (None)."""
    return [torch.zeros_like(t.detach()) if g is None else g.detach()
            for t, g in zip(tensors, grads, strict=True)]


def _multiple(gt: torch.Tensor, gh: torch.Tensor) -> tuple[float, float]:
    """(c, residual): the least-squares `gt ~= c * gh` and |gt - c gh| relative to the larger."""
    hh = float(gh @ gh)
    c = float(gt @ gh) / hh + 0.0
    scale = max(float(gt.norm()), abs(c) * math.sqrt(hh))
    return c, (float((gt - c * gh).norm()) / scale if scale else 0.0)


def _forward(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
             **watching) -> tuple[Losses, _Watch]:
    """One watched forward of the user's losses from the same random state."""
    reset_rng()
    watch = _Watch(spec, compiled, **watching)
    try:
        return run_losses(spec, losses), watch
    finally:
        watch.close()


def _watched(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
             key: str, head: str) -> tuple[dict[str, torch.Tensor], Flow | None]:
    """One forward from the same random state, then `key`'s flow from `head` to the trunk.
    One forward per loss: a compiled backward with donated buffers allows one backward only."""
    values, watch = _forward(spec, losses, reset_rng, compiled)
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
    return float(_forward(spec, losses, reset_rng, compiled, shift=shift)[0]["domain"].detach())


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


def set_progress(spec: Spec, progress: float | None) -> None:
    if progress is not None:
        try:
            spec.set_progress(progress)
        except Exception as exc:  # noqa: BLE001
            raise ProbeInputError(f"set_progress({progress:g}) raised {last_line(exc)}") from None


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
    values, watch = _forward(spec, losses, reset_rng, compiled)
    try:
        g_total = _grads(values["total"], watch.trunk)
    except Exception as exc:  # noqa: BLE001 - the model's own failure, reported
        return 1.0, f"the objective's backward raised {last_line(exc)}"
    if len(g_total) != len(domain.trunk_grads):
        return 1.0, "the trunk ran a different number of times for the objective"
    total = torch.cat([_flat(g) for g in _dense(watch.trunk, g_total)])
    basis = [torch.cat([_flat(g) for g in domain.trunk_grads])]
    if label is not None and label.trunk_grads and len(label.trunk_grads) == len(domain.trunk_grads):
        lab = torch.cat([_flat(g) for g in label.trunk_grads])
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
    values, watch = _forward(spec, losses, reset_rng, compiled, inside=inside)
    names = ["domain_head", *[k for k in watch.inside_order if k.startswith("inside:")]]
    tensors = [t for k in names for t in watch.heads[k]]
    if not watch.trunk or not watch.heads["domain_head"]:
        return ""
    try:
        grads = _grads(values["domain"], watch.trunk + tensors)
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
        return (all(math.isfinite(v) and 0.1 <= abs(v) <= 10.0 for v in (full, half))
                and abs(full - half) <= 0.25 * max(abs(full), abs(half)))


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
        result.error = last_line(exc)
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


def rounding(loss: float, dtype: torch.dtype) -> float:
    """What rounding alone may move a loss by between two identical forwards."""
    return LOSS_ROUNDING.bound(loss, dtype)


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
