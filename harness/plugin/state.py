"""The plugin's per-process state, kept in `config.stash[STATE]`: it lives and ends with the
pytest session that made it (lifecycle.py), never in module globals.

Each piece is made on first use: a run that collects no conformance cell loads no row and
starts no child.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core import registry
from grl_conformance.isolation import sandbox
from grl_conformance.isolation.control_runs import ControlRuns
from grl_conformance.plugin import options

UNSET = object()  # a piece not looked for yet (None is a valid answer for the pins)


@dataclass
class State:
    timeout: float
    controls_dir: str | None  # shared by the controller and its workers (lifecycle.py)
    impls: list | None = None
    controls: ControlRuns | None = None
    box: sandbox.Sandbox | None = None
    pins: object = UNSET  # expectations.Pins, or None when no file applies (pins.py)
    warmup_sent: bool = False


STATE = pytest.StashKey[State]()


def impls_of(config: pytest.Config) -> list[registry.Impl]:
    """The rows of this run, collected on first use (a run without conformance cells loads none)."""
    state = config.stash[STATE]
    if state.impls is None:
        try:
            state.impls = registry.collect(config.getoption("--grl-impl"), options.only(config),
                                           builtin=not config.getoption("--grl-no-builtin"))
        except registry.LoadError as exc:
            raise pytest.UsageError(str(exc)) from None
        known = {c.id for c in catalogue.all_checks()}
        for impl in state.impls:
            unknown = sorted(set(impl.unsupported) - known)
            if unknown:
                raise pytest.UsageError(f"{impl.name} ({impl.origin}): `unsupported` names unknown "
                                        f"check id(s) {', '.join(unknown)}")
    return state.impls


def sandbox_of(config: pytest.Config) -> sandbox.Sandbox:
    """This process's rows' children (isolation/sandbox.py), ended at unconfigure."""
    state = config.stash[STATE]
    if state.box is None:
        keep = config.getoption("--grl-keep-logs")
        state.box = sandbox.Sandbox(state.timeout, os.path.abspath(keep) if keep else None)
    return state.box
