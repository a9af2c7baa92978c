"""One watched forward of the user's losses: what the trunk returned and what the heads were
given, the losses checked as the spec promises them, and their gradients (no `.grad` touched).

Hooks record every floating-point tensor the trunk outputs (one per trunk call: source and
target batches) and each head's first tensor input, given to the head as a private alias so its
gradient is the head's own. `pairing.py` compares the two; `measure.py` and `training.py` call
the forwards.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from grl_conformance.core.outcome import exception_line
from grl_conformance.core.tolerances import tolerance
from grl_conformance.dann_probe.spec import ProbeInputError, Spec


def _trainable(module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class Watch:
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
        raise ProbeInputError(f"losses(model, batch) raised {exception_line(exc)}") from None
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


def gradients(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor | None]:
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


LOSS_ROUNDING = tolerance("probe_loss_rounding")


def rounding(loss: float, dtype: torch.dtype) -> float:
    """What rounding alone may move a loss by between two identical forwards."""
    return LOSS_ROUNDING.bound(loss, dtype)


def watched_forward(spec: Spec, losses: Callable, reset_rng: Callable[[], None], compiled: bool,
             **watching) -> tuple[Losses, Watch]:
    """One watched forward of the user's losses from the same random state."""
    reset_rng()
    watch = Watch(spec, compiled, **watching)
    try:
        return run_losses(spec, losses), watch
    finally:
        watch.close()


def set_progress(spec: Spec, progress: float | None) -> None:
    if progress is not None:
        try:
            spec.set_progress(progress)
        except Exception as exc:  # noqa: BLE001
            raise ProbeInputError(f"set_progress({progress:g}) raised {exception_line(exc)}") from None
