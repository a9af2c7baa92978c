"""The registry: which GRL implementations exist, what they are, and how to load them.

An entry is data (name, kind, origin, what it does not claim) plus a `load` callable that
returns the seed API. Loading is lazy and may fail: a failure becomes the row's outcome,
never a crashed run.
"""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

LOCAL = "grl-conformance (this repo)"
IMPLS_PACKAGE = "grl_conformance.impls"  # the repo's impls/ folder, installed under the package
KINDS = ("function", "hook", "detach", "library", "cpp", "package", "external")


@dataclass(frozen=True)
class GRL:
    """The seed API every implementation speaks once loaded.

    layer: `GradientReversalLayer(alpha=1.0)`, an nn.Module with `set_alpha(alpha)`.
    fn: `gradient_reversal(x, alpha=1.0)`.
    """

    layer: Callable[..., Any]
    fn: Callable[..., Any]


class LoadError(Exception):
    """An implementation could not be loaded (import, build or shape problem)."""


@dataclass(frozen=True, eq=False)
class Impl:
    """A registry entry.

    unsupported: check id -> reason, for what the implementation does not claim to support.
      Such a cell still runs: a non-pass shows as `xfail`, a pass is flagged as unexpected.
    ref: how a child process finds this entry again ("module:attr"); set by the registry.
    reference: the harness's own fixture rows; their behaviour per torch is pinned by the
      expectations files (reports/baselines), so a deviation fails pytest. Leave it False.
    """

    name: str
    kind: str
    load: Callable[[], GRL]
    origin: str = LOCAL
    unsupported: Mapping[str, str] = field(default_factory=dict)
    ref: str = ""
    reference: bool = False  # one of the repo's own reference rows, pinned by the expectations files

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}; one of {KINDS}")

    @cached_property
    def api(self) -> GRL:
        """The loaded seed API; raises whatever loading raised (cached per process)."""
        return self.load()


def seed_api(module_name: str) -> Callable[[], GRL]:
    """Loader for a module that defines `GradientReversalLayer` and `gradient_reversal`."""

    def load() -> GRL:
        module = importlib.import_module(module_name)
        return GRL(module.GradientReversalLayer, module.gradient_reversal)

    return load


# --- adapting outside code -------------------------------------------------------------

def layer_from_function(fn: Callable[..., Any], name: str) -> type:
    """A seed-API layer class around a GRL function `fn(x, alpha)`: how a function row gets its
    layer, and how the checks call any row's function with the alpha a schedule sets."""
    import torch

    class FunctionalLayer(torch.nn.Module):
        def __init__(self, alpha: float = 1.0) -> None:
            super().__init__()
            self.alpha = float(alpha)

        def set_alpha(self, alpha: float) -> None:
            self.alpha = float(alpha)

        def forward(self, x):
            return fn(x, self.alpha)

    FunctionalLayer.__name__ = FunctionalLayer.__qualname__ = f"{name}Layer"
    return FunctionalLayer


def function_from_layer(cls: type) -> Callable[..., Any]:
    """`gradient_reversal(x, alpha)` for a row that ships only a layer class."""

    def gradient_reversal(x, alpha=1.0):
        return cls(alpha=alpha)(x)

    return gradient_reversal


def from_attr(ref: str) -> Impl:
    """Resolve `MODULE:ATTR` into an entry, with a one-line LoadError on any problem.

    ATTR may be an `Impl`, an nn.Module class with the seed API, or a function `(x, alpha)`.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"--grl-impl {ref!r}: expected MODULE:ATTR")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        raise LoadError(f"--grl-impl {ref}: module {module_name!r} failed to import: "
                        f"{type(exc).__name__}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise LoadError(f"--grl-impl {ref}: module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Impl):
        return replace(obj, ref=ref)
    import torch

    if isinstance(obj, torch.nn.Module):
        raise LoadError(f"--grl-impl {ref}: {attr} is an nn.Module instance; pass its class "
                        "(constructed with alpha=...)")
    if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
        if not callable(getattr(obj, "set_alpha", None)):
            raise LoadError(f"--grl-impl {ref}: {attr} is an nn.Module without set_alpha(alpha)")
        api = GRL(obj, function_from_layer(obj))
    elif inspect.isfunction(obj) or inspect.isbuiltin(obj) or (callable(obj) and not inspect.isclass(obj)):
        api = GRL(layer_from_function(obj, attr), obj)
    else:
        raise LoadError(f"--grl-impl {ref}: {attr} is {type(obj).__name__}; expected a registry "
                        "Impl, an nn.Module class with set_alpha, or a function (x, alpha)")
    return Impl(name=attr, kind="external", load=lambda: api, origin=f"{module_name} (--grl-impl)",
                ref=ref)


# --- the registry -----------------------------------------------------------------------

def _broken_entry(module_name: str, exc: BaseException) -> Impl:
    message = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def load() -> GRL:
        raise LoadError(f"{IMPLS_PACKAGE}.{module_name} failed to import: {message}")

    return Impl(name=module_name, kind="external", load=load, origin=f"impls/{module_name}.py",
                ref=f"{IMPLS_PACKAGE}.{module_name}:IMPL")


def builtin_impls() -> list[Impl]:
    """Every `IMPL` (or `IMPLS` list) defined by a module in `impls/`, modules sorted by name."""
    from grl_conformance import impls

    found: list[Impl] = []
    for info in sorted(pkgutil.iter_modules(impls.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        qualified = f"{IMPLS_PACKAGE}.{info.name}"
        try:
            module = importlib.import_module(qualified)
        except Exception as exc:  # noqa: BLE001 - a broken file is a red row, not a crash
            found.append(_broken_entry(info.name, exc))
            continue
        if isinstance(getattr(module, "IMPL", None), Impl):
            found.append(replace(module.IMPL, ref=f"{qualified}:IMPL"))
        for i, entry in enumerate(getattr(module, "IMPLS", ())):
            found.append(replace(entry, ref=f"{qualified}:IMPLS[{i}]"))
    return found


def resolve(ref: str) -> Impl:
    """Find an entry again from its `ref` (used by child processes)."""
    module_name, _, attr = ref.partition(":")
    if attr.startswith("IMPLS["):
        module = importlib.import_module(module_name)
        return replace(module.IMPLS[int(attr[6:-1])], ref=ref)
    if module_name.startswith(IMPLS_PACKAGE + ".") and attr == "IMPL":
        module = importlib.import_module(module_name)
        return replace(module.IMPL, ref=ref)
    return from_attr(ref)


def external_refs(cli_refs: list[str] | None = None) -> list[str]:
    refs = list(cli_refs or [])
    refs += [r.strip() for r in os.environ.get("GRL_IMPLS", "").split(",") if r.strip()]
    return refs


def collect(cli_refs: list[str] | None = None, only: list[str] | None = None,
            builtin: bool = True) -> list[Impl]:
    """The rows of a run: built-in entries plus external ones, filtered by name.

    builtin=False leaves out the package's own rows (impls/) except those named in `only`.
    """
    own = builtin_impls()
    by_name = {e.name: e for e in own}
    external, named = [], []
    for ref in external_refs(cli_refs):
        if ":" not in ref and ref in by_name:  # a built-in row named by its name
            named.append(ref)
        elif ":" not in ref:
            raise LoadError(f"--grl-impl {ref!r}: expected MODULE:ATTR or the name of a built-in "
                            f"row ({', '.join(sorted(by_name))})")
        else:
            external.append(from_attr(ref))
    if named:
        only = [*(only or ()), *named] if (only or not builtin) else None
    if not builtin:
        own = [e for e in own if e.name in (only or ())]
        only = (list(only) + [e.name for e in external]) if only else None
    entries = own + external
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LoadError(f"duplicate implementation names: {', '.join(dupes)}")
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise LoadError(f"--grl-only: no implementation named {', '.join(unknown)}; "
                            f"known: {', '.join(names)}")
        entries = [e for e in entries if e.name in only]
    return entries
