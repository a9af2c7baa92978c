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

from grl_conformance.dann_probe.spec import ProbeInputError, Spec, last_line

# How far `g_trunk` may be from `c * g_head`, relative to |g_trunk|, for the least precise
# gradient dtype involved: a GRL multiplies once, so a correct one is within a few ulps.
RESIDUAL_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 4e-3,
                      torch.bfloat16: 3e-2}
# How precisely a measured alpha can be held to a formula or called flat, by the same dtype.
ALPHA_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 2e-3,
                   torch.bfloat16: 1e-2}
# A finite-difference alpha is good to about this, relative (central differences in float32).
FD_ALPHA_TOLERANCE = 5e-2


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
    alpha_tolerance: float = ALPHA_TOLERANCE[torch.float32]
    error: str = ""                # the backward raised
    trunk_grads: list = field(default_factory=list, repr=False)  # per trunk call, for the FD probe

    @property
    def proportional(self) -> bool:
        return self.comparable and self.residual <= self.tolerance


@dataclass
class Pass:
    """What the forwards at one progress point showed."""

    progress: float | None
    domain: Flow = field(default_factory=Flow)
    label: Flow | None = None
    fd_alpha: float | None = None  # by finite differences, where the pairing could not say
    fd_note: str = ""


def _trainable(module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class _Watch:
    """Forward hooks recording the trunk's outputs and the heads' first tensor inputs; `shift`
    (one tensor per trunk call) is added to the trunk's outputs for a finite difference."""

    def __init__(self, spec: Spec, compiled: bool, shift: list | None = None) -> None:
        self.trunk: list[torch.Tensor] = []
        self.heads: dict[str, list[torch.Tensor]] = {"domain_head": [], "label_head": []}
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

    def _on_trunk(self, module, args, output):
        if not isinstance(output, torch.Tensor):
            self.not_tensor = type(output).__name__
            return None
        replaced = None
        if not output.requires_grad and output.is_floating_point():
            if self.frozen_trunk and torch.is_grad_enabled():
                # a frozen trunk: make its output a leaf whose gradient can still be read
                replaced = output = output.detach().requires_grad_(True)
            else:  # no_grad or detach inside a trainable trunk: the mistake itself
                self.without_grad += 1
        if self.shift is not None and len(self.trunk) < len(self.shift):
            replaced = output = output + self.shift[len(self.trunk)].reshape(output.shape).to(output.dtype)
        self.trunk.append(output)
        return replaced

    def _on_head(self, key: str):
        def record(module, args, kwargs):
            """The head's first tensor input, given to the head as a private alias (`view_as`):
            its gradient is the head's own, before any hook on the shared features."""
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


def run_losses(spec: Spec, losses: Callable) -> dict[str, torch.Tensor]:
    """Call the user's losses and check what comes back; `total` defaults to the sum."""
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
                              "with 'domain' (and optionally 'label', 'total')")
    if "domain" not in out:
        raise ProbeInputError(f"losses(model, batch) returned keys {sorted(out)}: 'domain' (the "
                              "domain-classification loss) is required")
    unknown = sorted(set(out) - {"domain", "label", "total"})
    if unknown:
        raise ProbeInputError(f"losses(model, batch) returned unknown keys {unknown}; expected "
                              "'domain', 'label', 'total'")
    result = {k: _scalar(v, k) for k, v in out.items()}
    if "total" not in result:
        result["total"] = sum(result[k] for k in ("domain", "label") if k in result)
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
    flow = Flow(trunk_without_grad=without_grad > 0)
    try:
        grads = _grads(loss, trunk + heads)
    except Exception as exc:  # noqa: BLE001 - a backward that raises is the model's own failure
        flow.error = last_line(exc)
        return flow
    g_trunk, g_heads = grads[:len(trunk)], grads[len(trunk):]
    flow.trunk_grads = [None if g is None else g.detach() for g in g_trunk]
    sizes = [t.numel() for t in trunk]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    space = torch.cat([_flat(t) for t in trunk]) if trunk else torch.zeros(0, dtype=torch.float64)
    gt = torch.cat([_flat(g) if g is not None else torch.zeros(t.numel(), dtype=torch.float64)
                    for t, g in zip(trunk, g_trunk, strict=True)]) if trunk else space
    gh = torch.zeros_like(space)
    flow.reached = any(g is not None for g in g_trunk)
    flow.finite = bool(gt.isfinite().all()) and bool(loss.detach().isfinite())
    flow.trunk_norm = float(gt.norm())
    flow.head_detached = all(g is None for g in g_heads)
    dtypes = [t.dtype for t in trunk + heads if t.is_floating_point()]
    flow.tolerance = max((RESIDUAL_TOLERANCE.get(d, 1e-5) for d in dtypes), default=1e-5)
    flow.alpha_tolerance = max((ALPHA_TOLERANCE.get(d, 1e-4) for d in dtypes), default=1e-4)
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
    flow.coefficient = float(gt @ gh) / hh + 0.0
    scale = max(flow.trunk_norm, abs(flow.coefficient) * math.sqrt(hh))
    flow.residual = float((gt - flow.coefficient * gh).norm()) / scale if scale else 0.0
    return flow


def _watched(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
             key: str, head: str) -> tuple[dict[str, torch.Tensor], Flow | None]:
    """One forward from the same random state, then `key`'s flow from `head` to the trunk.
    One forward per loss: a compiled backward with donated buffers allows one backward only."""
    reset_rng()
    watch = _Watch(spec, compiled)
    try:
        values = run_losses(spec, losses)
    finally:
        watch.close()
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
    reset_rng()
    watch = _Watch(spec, compiled, shift)
    try:  # with grad enabled, as in training: a model may register hooks in its forward
        return float(run_losses(spec, losses)["domain"].detach())
    finally:
        watch.close()


FD_STEPS = (1e-2, 1e-1, 1.0)  # the shift's norm relative to (loss / |g_trunk|), until it moves


def finite_difference(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
                      flow: Flow) -> tuple[float | None, str]:
    """alpha from the domain loss's true change along autograd's gradient at the trunk.

    Shifting every trunk output by `h * g / |g|` changes the domain loss by about `h * D`, D the
    true derivative along g. With a reversal of alpha between, autograd's g is -alpha times the
    true gradient, so D = -|g| / alpha and alpha = -|g| / D; without one, D = |g| (alpha -1).
    Central differences from the same random state; None (with the reason) where the loss does
    not move or losses is not deterministic."""
    grads = flow.trunk_grads
    norm = math.sqrt(sum(float(g.double().norm()) ** 2 for g in grads if g is not None))
    if not grads or norm == 0.0 or not math.isfinite(norm):
        return None, "no gradient at the trunk to follow"
    base = _domain_loss(spec, losses, reset_rng, compiled)
    again = _domain_loss(spec, losses, reset_rng, compiled)
    if abs(base - again) > rounding(base, torch.float32):
        return None, f"losses is not deterministic between calls ({base:.6g} vs {again:.6g})"
    noise = 4 * rounding(base, torch.float32)
    for relative in FD_STEPS:
        h = relative * max(abs(base), 1e-6) / norm
        shift = [None if g is None else g * (h / norm) for g in grads]
        shift = [torch.zeros_like(t) if s is None else s for s, t in zip(shift, grads, strict=True)]
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
    if progress is not None:
        try:
            spec.set_progress(progress)
        except Exception as exc:  # noqa: BLE001
            raise ProbeInputError(f"set_progress({progress:g}) raised {last_line(exc)}") from None
    values, domain = _watched(spec, losses, reset_rng, compiled, "domain", "domain_head")
    result = Pass(progress, domain)
    if spec.label_head is not None and "label" in values:
        result.label = _watched(spec, losses, reset_rng, compiled, "label", "label_head")[1]
    unreversed = domain.proportional and abs(domain.coefficient - 1.0) <= domain.alpha_tolerance
    if domain.reached and domain.trunk_norm > 0 and domain.finite and (
            unreversed or (not domain.comparable and domain.reason)):
        result.fd_alpha, result.fd_note = finite_difference(spec, losses, reset_rng, compiled, domain)
    domain.trunk_grads = []
    return result


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
    def head_grads(key: str):
        reset_rng()
        values = run_losses(spec, losses)
        loss = values[key]
        grads = (torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad
                 else [None] * len(params))
        return float(values["domain"].detach()), [torch.zeros_like(p) if g is None else g.detach()
                                                  for p, g in zip(params, grads, strict=True)]

    try:  # one forward each: a compiled backward allows one backward per graph
        result.before, grads = head_grads("total")
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
    return 64 * torch.finfo(dtype).eps * max(abs(loss), 1e-12)


def missing_from_optimizer(spec: Spec) -> tuple[list[str], list[str]]:
    """Trainable parameters of the trunk and the heads the optimizer does not hold, and those
    it holds in a group whose learning rate is 0 (qualified names)."""
    held: dict[int, float] = {}
    for group in spec.optimizer.param_groups:
        for p in group["params"]:
            held[id(p)] = float(group.get("lr", math.nan))  # a tensor lr reads as its value
    missing, frozen = [], []
    seen = set()
    for part in (spec.trunk, spec.domain_head, spec.label_head):
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
