"""Leave the user's objects as the probe found them.

The probe runs the user's forward several times, moves the domain head's parameters for one
small step and calls their `set_progress`; afterwards parameters, buffers, `.grad`, every
module's plain attributes (training mode, a GRL's alpha, a warm-start counter), the RNGs and
the optimizer (never stepped; its groups' settings put back, should set_progress anneal the
learning rate) are exactly as before. The RNGs are also reset before every forward, so each
forward of one probe sees the same random draws (dropout masks, sampled batches).
"""
from __future__ import annotations

import random
import sys
from contextlib import contextmanager

import torch
from torch import nn

# Module attributes that are the module's machinery, not its state: parameters, buffers and
# children are restored by value below, hooks by their handles.
_MACHINERY = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")


def _is_machinery(key: str) -> bool:
    return key in _MACHINERY or "hook" in key


class RNG:
    """The torch (CPU and initialised CUDA), Python and NumPy random states at one moment."""

    def __init__(self) -> None:
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.python = random.getstate()
        numpy = sys.modules.get("numpy")
        self.numpy = numpy.random.get_state() if numpy is not None else None

    def reset(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        numpy = sys.modules.get("numpy")
        if numpy is not None and self.numpy is not None:
            numpy.random.set_state(self.numpy)


def _clone(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class Snapshot:
    """Everything of the model that a forward, a step or set_progress can change."""

    def __init__(self, model: nn.Module, optimizers=()) -> None:
        self.modules = list(model.modules())
        self.attrs = [{k: v for k, v in vars(m).items() if not _is_machinery(k)} for m in self.modules]
        self.attr_values = [{k: _clone(v) for k, v in a.items() if isinstance(v, torch.Tensor)}
                            for a in self.attrs]
        # which objects sit in each module's slots (set_progress may swap a GRL or a parameter)
        self.slots = [(m, {k: dict(getattr(m, k)) for k in ("_parameters", "_buffers", "_modules")})
                      for m in self.modules]
        self.params = [(p, p.detach().clone(), p.grad, _clone(p.grad), p.requires_grad)
                       for p in model.parameters()]
        self.buffers = [(m, k, b, _clone(b)) for m in self.modules for k, b in m._buffers.items()]
        self.rng = RNG()
        # set_progress may anneal the learning rate: the groups' settings are put back too
        self.groups = [(g, {k: v for k, v in g.items() if k != "params"})
                       for opt in optimizers for g in opt.param_groups]

    def quiet_dropout(self) -> None:
        """Dropout layers to eval mode: a mask between trunk and head would scale the gradient
        element by element, and no GRL is then measurable. Every other module keeps its mode."""
        for m in self.modules:
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.training = False

    def restore_parameters(self) -> None:
        with torch.no_grad():
            for p, value, *_ in self.params:
                p.copy_(value)

    def restore(self) -> None:
        for m, slots in self.slots:
            for key, content in slots.items():
                getattr(m, key).clear()
                getattr(m, key).update(content)
        with torch.no_grad():
            for p, value, grad, grad_value, requires_grad in self.params:
                p.requires_grad_(requires_grad)
                p.copy_(value)
                p.grad = grad
                if grad is not None:
                    grad.copy_(grad_value)
            for m, key, buffer, value in self.buffers:
                m._buffers[key] = buffer
                if buffer is not None:
                    buffer.copy_(value)
            for m, attrs, values in zip(self.modules, self.attrs, self.attr_values, strict=True):
                now = vars(m)
                for key in [k for k in now if not _is_machinery(k) and k not in attrs]:
                    del now[key]
                now.update(attrs)
                for key, value in values.items():
                    attrs[key].copy_(value)
        for group, settings in self.groups:
            group.update(settings)
        self.rng.reset()

    def changes(self) -> list[str]:
        """What differs from the snapshot now (the self-tests' proof; empty after `restore`)."""
        out = []
        for m, slots in self.slots:
            for key, content in slots.items():
                now = getattr(m, key)
                if now.keys() != content.keys() or any(now[k] is not v for k, v in content.items()):
                    out.append(f"the {key[1:]} of a {type(m).__name__}")
        for p, value, grad, grad_value, requires_grad in self.params:
            if p.requires_grad != requires_grad:
                out.append("a parameter's requires_grad")
            if not torch.equal(p.detach(), value):
                out.append("a parameter's value")
            if p.grad is not grad or (grad is not None and not torch.equal(grad, grad_value)):
                out.append("a parameter's .grad")
        for m, key, buffer, value in self.buffers:
            if m._buffers.get(key) is not buffer or (buffer is not None and not torch.equal(buffer, value)):
                out.append(f"buffer {key}")
        for m, attrs in zip(self.modules, self.attrs, strict=True):
            now = {k: v for k, v in vars(m).items() if not _is_machinery(k)}
            if now.keys() != attrs.keys() or any(now[k] is not v for k, v in attrs.items()):
                out.append(f"attributes of a {type(m).__name__}")
        if not torch.equal(torch.get_rng_state(), self.rng.torch) or random.getstate() != self.rng.python:
            out.append("the RNG state")
        return sorted(set(out))


@contextmanager
def preserved(model: nn.Module, optimizers=()):
    """Run a probe: dropout layers in eval mode (so gradients compare element by element), the
    RNGs reset before each forward (`snapshot.rng.reset()`), everything restored at the end.
    `model` holds every module probed (the spec's, or the probe's container of the parts)."""
    snapshot = Snapshot(model, optimizers)
    try:
        snapshot.quiet_dropout()
        yield snapshot
    finally:
        snapshot.restore()
