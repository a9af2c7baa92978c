"""One forward of the user's losses, watched: the gradients at the trunk's output and at the heads' inputs.

The trunk may run several times per step (source and target batches) and the domain head may
see those outputs one by one or concatenated. Every tensor the trunk outputs is laid end to end
in one flat "trunk space"; each head input is found in it by value (a GRL's forward is the
identity, so the head's input holds the very numbers the trunk output, reshaped or
concatenated), which tells which gradient element at the head belongs to which at the trunk.
Then one loss's gradient at the trunk is compared with its gradient at the head's input:
`g_trunk = c * g_head`, with `c = -alpha` on the domain path and `c = 1` on the label path.
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


@dataclass
class Flow:
    """One loss's gradient at the trunk's output against its gradient at one head's input."""

    reached: bool = False          # some gradient arrives at the trunk's output
    trunk_norm: float = 0.0
    head_norm: float = 0.0
    head_detached: bool = False    # the head's input carries no gradient at all
    comparable: bool = False
    reason: str = ""               # why not comparable
    coefficient: float = math.nan  # g_trunk ~= coefficient * g_head
    residual: float = math.nan     # |g_trunk - c g_head| / |g_trunk|
    tolerance: float = 0.0
    error: str = ""                # the backward raised

    @property
    def proportional(self) -> bool:
        return self.comparable and self.residual <= self.tolerance


@dataclass
class Pass:
    """What one forward at one progress point showed."""

    progress: float | None
    losses: dict[str, float] = field(default_factory=dict)
    domain: Flow = field(default_factory=Flow)
    label: Flow | None = None


class _Watch:
    """Forward hooks recording the trunk's outputs and the heads' first tensor inputs."""

    def __init__(self, spec: Spec, compiled: bool) -> None:
        self.trunk: list[torch.Tensor] = []
        self.heads: dict[str, list[torch.Tensor]] = {"domain_head": [], "label_head": []}
        self.not_tensor = ""
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
        if not output.requires_grad and output.is_floating_point():
            # a frozen trunk: make its output a leaf whose gradient can still be read
            output = output.detach().requires_grad_(True)
            self.trunk.append(output)
            return output
        self.trunk.append(output)
        return None

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
    return value.reshape(())


def run_losses(spec: Spec, losses: Callable) -> dict[str, torch.Tensor]:
    """Call the user's losses and check what comes back; `total` defaults to the sum."""
    try:
        out = losses(spec.model, spec.batch)
    except ProbeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: one line, exit 2
        raise ProbeInputError(f"losses(model, batch) raised {last_line(exc)}") from None
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


def _locate(space: torch.Tensor, starts: list[int], ends: list[int], head: torch.Tensor) -> int | None:
    """Where the head's input stands in trunk space (its numbers, in order, from one trunk
    output's start or up to one's end), or None."""
    flat = head.detach().reshape(-1)
    n = flat.numel()
    for s in sorted({*starts, *(e - n for e in ends)}):
        if 0 <= s and s + n <= space.numel() and torch.equal(space[s:s + n].to(flat.dtype), flat):
            return s
    return None


def _shapes(tensors: list[torch.Tensor]) -> str:
    shapes = sorted({str(list(t.shape)) for t in tensors})
    return ", ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "")


def compare(loss: torch.Tensor, trunk: list[torch.Tensor], heads: list[torch.Tensor],
            head_name: str) -> Flow:
    """The flow of `loss`'s gradient from one head's input back to the trunk's output."""
    flow = Flow()
    try:
        grads = _grads(loss, trunk + heads)
    except Exception as exc:  # noqa: BLE001 - a backward that raises is the model's own failure
        flow.error = last_line(exc)
        return flow
    g_trunk, g_heads = grads[:len(trunk)], grads[len(trunk):]
    sizes = [t.numel() for t in trunk]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    ends = [s + n for s, n in zip(starts, sizes, strict=True)]
    space = torch.cat([_flat(t) for t in trunk]) if trunk else torch.zeros(0, dtype=torch.float64)
    gt = torch.cat([_flat(g) if g is not None else torch.zeros(t.numel(), dtype=torch.float64)
                    for t, g in zip(trunk, g_trunk, strict=True)]) if trunk else space
    gh = torch.zeros_like(space)
    flow.reached = any(g is not None for g in g_trunk)
    flow.trunk_norm = float(gt.norm())
    flow.head_norm = math.sqrt(sum(float(_flat(g).norm()) ** 2 for g in g_heads if g is not None))
    flow.head_detached = all(g is None for g in g_heads)
    dtypes = [t.dtype for t in trunk + heads if t.is_floating_point()]
    flow.tolerance = max((RESIDUAL_TOLERANCE.get(d, 1e-5) for d in dtypes), default=1e-5)
    unplaced = []
    for head, g in zip(heads, g_heads, strict=True):
        start = _locate(space, starts, ends, head)
        if start is None:
            if g is not None and bool(g.ne(0).any()):
                unplaced.append(head)
            continue
        if g is not None:
            gh[start:start + head.numel()] += _flat(g)
    if unplaced:
        flow.reason = (f"the {head_name}'s input ({_shapes(unplaced)}) is not the trunk's output "
                       f"({_shapes(trunk)}) reshaped or concatenated: something other than a GRL "
                       "and a reshape stands between them")
        return flow
    if not bool(gt.isfinite().all()) or not bool(gh.isfinite().all()):
        flow.comparable, flow.reason = True, "non-finite gradient (nan or inf)"
        flow.residual = math.inf
        return flow
    hh = float(gh @ gh)
    if hh == 0.0:
        flow.reason = f"the loss gives the {head_name}'s input no gradient"
        return flow
    flow.comparable = True
    flow.coefficient = float(gt @ gh) / hh
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
    return values, compare(values[key], watch.trunk, watch.heads[head], head.replace("_", " "))


def measure(spec: Spec, losses: Callable, progress: float | None, reset_rng: Callable[[], None],
            compiled: bool = False) -> Pass:
    """The watched forwards at `progress` (after `set_progress(progress)` where given)."""
    if progress is not None:
        try:
            spec.set_progress(progress)
        except Exception as exc:  # noqa: BLE001
            raise ProbeInputError(f"set_progress({progress:g}) raised {last_line(exc)}") from None
    values, domain = _watched(spec, losses, reset_rng, compiled, "domain", "domain_head")
    result = Pass(progress, {k: float(v.detach()) for k, v in values.items()}, domain)
    if spec.label_head is not None and "label" in values:
        result.label = _watched(spec, losses, reset_rng, compiled, "label", "label_head")[1]
    return result


@dataclass
class Step:
    """The domain loss before and after a small step along the objective's gradient on the domain
    head's parameters (a fresh forward each time)."""

    trainable: int = 0
    gradient_norm: float = 0.0
    step: float = 0.0
    before: float = math.nan
    after: float = math.nan       # at theta - step * g / |g|
    opposite: float = math.nan    # at theta + step * g / |g|
    progress: float | None = None


STEP_SIZES = (1e-3, 1e-2, 1e-1)  # relative to the head's parameter norm, until the loss moves


def step_domain_head(spec: Spec, losses: Callable, progress: float | None,
                     reset_rng: Callable[[], None], restore: Callable[[], None]) -> Step:
    params = [p for p in spec.domain_head.module.parameters() if p.requires_grad]
    result = Step(trainable=len(params), progress=progress)
    if not params:
        return result
    reset_rng()
    values = run_losses(spec, losses)
    result.before = float(values["domain"].detach())
    total = values["total"]
    grads = (torch.autograd.grad(total, params, allow_unused=True) if total.requires_grad
             else [None] * len(params))
    grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads, strict=True)]
    norm = math.sqrt(sum(float(g.double().norm()) ** 2 for g in grads))
    result.gradient_norm = norm
    if norm == 0.0 or not math.isfinite(norm):
        return result
    size = math.sqrt(sum(float(p.detach().double().norm()) ** 2 for p in params)) or 1.0

    def domain_at(sign: float, h: float) -> float:
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=sign * h / norm)
        try:
            reset_rng()
            return float(run_losses(spec, losses)["domain"].detach())
        finally:
            restore()

    noise = 64 * torch.finfo(values["domain"].dtype).eps * max(abs(result.before), 1e-12)
    for relative in STEP_SIZES:
        result.step = relative * size
        result.after = domain_at(-1.0, result.step)
        result.opposite = domain_at(1.0, result.step)
        if abs(result.after - result.before) > noise or abs(result.opposite - result.before) > noise:
            break
    return result


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

