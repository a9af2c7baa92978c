"""Shared loader for published GRL packages (rows of kind "package", `make peers`).

A package that is not installed gives `skip` cells with the install hint; one that is installed
but fails to import or run gives `error` cells with its real message (nothing here catches it).
The packages are installed with `pip install --no-deps` so that none of them pulls another torch
(or torchvision): PEERS pins each one, LIGHT_DEPS lists what their import needs besides torch.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any

from grl_conformance.core.outcome import Skipped
from grl_conformance.core.registry import GRL

# distribution -> pinned version (the Makefile's PEERS list installs exactly these)
PEERS = {
    "torch-gradient-reversal": "1.0.0",
    "pytorch-revgrad": "0.2.0",
    "pytorch-adapt": "0.0.83",
    "dalib": "0.2",
}
# modules the GRL's import needs besides torch and numpy, and what provides them
LIGHT_DEPS = {
    "pytorch_metric_learning": "pytorch-metric-learning==1.6.3 (--no-deps)",
    "scipy": "scipy",
    "tqdm": "tqdm",
    "numpy": "numpy",
}
INSTALL_HINT = "`make peers` (pip install --no-deps {dist}=={pin}; see docs/peers.md)"


def origin(dist: str) -> str:
    """`<dist> <version>` from the installed metadata, or `<dist> (not installed)`."""
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


def loader(dist: str, module: str, build: Callable[[Any], GRL],
           importer: Callable[[], Any] | None = None) -> Callable[[], GRL]:
    """`load` for an Impl: import `module` (with `importer` where a plain import will not do)
    and `build` the seed API from it. Package or a light dependency missing -> Skipped;
    anything else raises (an error cell with the real message)."""

    def load() -> GRL:
        hint = INSTALL_HINT.format(dist=dist, pin=PEERS.get(dist, "VERSION"))
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise Skipped(f"{dist} is not installed: {hint}") from None
        try:
            loaded = importer() if importer else importlib.import_module(module)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            own = module.split(".")[0]
            if top in LIGHT_DEPS:
                raise Skipped(f"{dist} needs {top} ({LIGHT_DEPS[top]}), not installed: {hint}") from None
            if top and top == own:
                raise Skipped(f"{dist} metadata is installed but module {top!r} is not importable: "
                              f"{hint}") from None
            raise
        return build(loaded)

    return load
