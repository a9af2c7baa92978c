"""The probe's input: a user's DANN setup as a dict, validated into a `Spec`, or one clear line why not.

The dict's keys are the public contract (docs/probe.md); every problem with them is a
`ProbeInputError` naming the key, so `grl-harness probe` can print one line and exit 2.
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grl_conformance.core.outcome import exception_line

REQUIRED = ("batch", "losses", "trunk", "domain_head")
# model: optional where trunk and heads are given as modules (real code keeps the encoder,
# classifier and discriminator as separate objects); optimizer: one or several (a
# discriminator stepped by an optimizer of its own).
OPTIONAL = ("model", "label_head", "optimizer", "set_progress", "progress", "alpha", "name")
# Progress points probed when the spec gives `set_progress` and no `progress`: all after the
# start, since the usual schedule 2 / (1 + exp(-10 p)) - 1 is exactly 0 at p = 0.
DEFAULT_PROGRESS = (0.1, 0.25, 0.5, 0.75, 1.0)


class ProbeInputError(ValueError):
    """The spec (or what it returns) cannot be probed; the message is one line."""


@dataclass
class Part:
    """A submodule the probe watches, with its qualified name in the model."""

    module: Any
    name: str


def _container(parts: dict):
    """What `losses` gets as its model where the spec names none: an `nn.Module` made by the
    probe holding the trunk and heads as `model.trunk`, `model.domain_head`, `model.label_head`,
    so all are snapshotted and restored alike (being held changes nothing of the user's)."""
    import torch

    class ProbedParts(torch.nn.Module):
        pass

    holder = ProbedParts()
    for key, module in parts.items():
        if module is not None:
            holder.add_module(key, module)
    return holder


@dataclass
class Spec:
    model: Any
    batch: Any
    losses: Callable[[Any, Any], Mapping[str, Any]]
    trunk: Part
    domain_head: Part
    label_head: Part | None = None
    optimizers: tuple = ()
    set_progress: Callable[[float], Any] | None = None
    progress: tuple[float, ...] = DEFAULT_PROGRESS
    alpha: Callable[[float], float] | None = None
    name: str = "spec"
    # where the spec's domain_head holds the GRL, the probe measures at the module right after
    # the reversal (measure.locate_reversal): this is the module the user named
    named_domain_head: Part | None = None

    @property
    def found_in_head(self) -> str:
        """Where the probe measures, in words, when it is not the head the user named."""
        if self.named_domain_head is None:
            return ""
        return (f"the reversal stands inside the domain head ({self.named_domain_head.name}): "
                f"measured at {self.domain_head.name}, the module right after it")

    @property
    def points(self) -> tuple[float | None, ...]:
        """Where the probe measures: each progress point, or once as things stand."""
        return self.progress if self.set_progress is not None else (None,)

    def expected_alpha(self, p: float) -> float:
        """The user's `alpha(p)`; a raise or a non-number is a spec error (one line)."""
        try:
            value = float(self.alpha(p))
        except Exception as exc:  # noqa: BLE001 - the user's code
            raise ProbeInputError(f"spec key 'alpha': alpha({p:g}) raised {exception_line(exc)}") from None
        if not math.isfinite(value):
            raise ProbeInputError(f"spec key 'alpha': alpha({p:g}) is {value}")
        return value


def _part(model, value, key: str, required: bool) -> Part | None:
    import torch

    if value is None:
        if required:
            raise ProbeInputError(f"spec key {key!r} is None; give the submodule (or its name)")
        return None
    if isinstance(value, str):
        try:
            module = model.get_submodule(value)
        except AttributeError:
            raise ProbeInputError(f"spec key {key!r}: the model has no submodule {value!r}") from None
    elif isinstance(value, torch.nn.Module):
        module = value
    else:
        raise ProbeInputError(f"spec key {key!r} is {type(value).__name__}; expected a submodule "
                              "of the model or its name")
    names = [n for n, m in model.named_modules(remove_duplicate=False) if m is module and n]
    if not names:
        what = "the model itself" if module is model else f"a {type(module).__name__}"
        raise ProbeInputError(f"spec key {key!r} is {what}, not a submodule of the model "
                              f"({type(model).__name__})")
    return Part(module, names[0])


def _inside(inner, outer) -> bool:
    return any(m is inner for m in outer.modules())


def _progress(value) -> tuple[float, ...]:
    try:
        points = tuple(float(p) for p in value)
    except (TypeError, ValueError):
        raise ProbeInputError("spec key 'progress': expected a list of numbers in [0, 1]") from None
    if len(points) < 2 or any(not (0.0 <= p <= 1.0) or math.isnan(p) for p in points):
        raise ProbeInputError(f"spec key 'progress': expected at least two numbers in [0, 1], got "
                              f"{list(points)}")
    return points


def from_dict(raw: Any, name: str = "spec") -> Spec:
    """Validate a spec dict (see docs/probe.md) into a `Spec`."""
    import torch

    if isinstance(raw, Spec):
        return raw
    if not isinstance(raw, Mapping):
        raise ProbeInputError(f"{name}: expected a dict with keys {', '.join(REQUIRED)}, got "
                              f"{type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if missing:
        raise ProbeInputError(f"{name}: spec is missing {', '.join(map(repr, missing))} "
                              f"(required: {', '.join(REQUIRED)})")
    if unknown:
        raise ProbeInputError(f"{name}: unknown spec key {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(REQUIRED + OPTIONAL)})")
    model = raw.get("model")
    if model is None:
        given = {k: raw.get(k) for k in ("trunk", "domain_head", "label_head")}
        named = [k for k, v in given.items() if isinstance(v, str)]
        if named:
            raise ProbeInputError(f"{name}: spec key {named[0]!r} is a name ({given[named[0]]!r}) "
                                  "but the spec has no 'model' to look it up in: give the module")
        for key, value in given.items():
            if value is not None and not isinstance(value, torch.nn.Module):
                raise ProbeInputError(f"{name}: spec key {key!r} is {type(value).__name__}; "
                                      "expected an nn.Module")
        if given["trunk"] is None or given["domain_head"] is None:
            raise ProbeInputError(f"{name}: spec keys 'trunk' and 'domain_head' are required")
        model = _container(given)
    if not isinstance(model, torch.nn.Module):
        raise ProbeInputError(f"{name}: spec key 'model' is {type(model).__name__}, expected an "
                              "nn.Module")
    for key in ("losses", "set_progress", "alpha"):
        if raw.get(key) is not None and not callable(raw[key]):
            raise ProbeInputError(f"{name}: spec key {key!r} is {type(raw[key]).__name__}, "
                                  "expected a callable")
    optimizer = raw.get("optimizer")
    optimizers = (() if optimizer is None else tuple(optimizer)
                  if isinstance(optimizer, (list, tuple)) else (optimizer,))
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Optimizer):
            raise ProbeInputError(f"{name}: spec key 'optimizer' holds a {type(opt).__name__}, "
                                  "expected a torch.optim.Optimizer (or a list of them)")
    parts = {key: _part(model, raw.get(key), key, key != "label_head")
             for key in ("trunk", "domain_head", "label_head")}
    named = [(k, p) for k, p in parts.items() if p is not None]
    for i, (k1, p1) in enumerate(named):
        for k2, p2 in named[i + 1:]:
            if p1.module is p2.module or _inside(p1.module, p2.module) or _inside(p2.module, p1.module):
                raise ProbeInputError(f"{name}: spec keys {k1!r} ({p1.name}) and {k2!r} ({p2.name}) "
                                      "are the same module or one holds the other: name three "
                                      "separate submodules")
    return Spec(
        model=model, batch=raw["batch"], losses=raw["losses"],
        trunk=parts["trunk"], domain_head=parts["domain_head"], label_head=parts["label_head"],
        optimizers=optimizers, set_progress=raw.get("set_progress"),
        progress=_progress(raw["progress"]) if raw.get("progress") is not None else DEFAULT_PROGRESS,
        alpha=raw.get("alpha"), name=str(raw.get("name") or name))


def load(ref: str) -> Spec:
    """`MODULE:ATTR` -> Spec. ATTR is the spec dict or a zero-argument callable returning it;
    MODULE is imported from the current directory first, as `python -m` would."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ProbeInputError(f"{ref!r}: expected MODULE:ATTR (e.g. mymodule:make_spec)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        raise ProbeInputError(f"{ref}: module {module_name!r} failed to import: "
                              f"{exception_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProbeInputError(f"{ref}: module {module_name!r} has no attribute {attr!r}") from None
    if callable(obj) and not isinstance(obj, Mapping):
        if inspect.isclass(obj):
            raise ProbeInputError(f"{ref}: {attr} is a class; expected the spec dict or a "
                                  "function returning it")
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            raise ProbeInputError(f"{ref}: {attr}() raised {exception_line(exc)}") from None
    return from_dict(obj, name=ref)


def describe_points(points: Sequence[float | None]) -> str:
    return ", ".join("now" if p is None else f"{p:g}" for p in points)
