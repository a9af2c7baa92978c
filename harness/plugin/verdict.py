"""A cell's verdict, decided in one place: its record for the report and what its test does.

`final` is the one function that judges a cell, from the row's outcome, its column's control and
the expectations that hold the row (a reference row's pins, the torch-upgrade gate's baseline).
It is the default answer to `pytest_grl_cell_status` (hookspec.py); which pins and which
baseline apply are hooks of their own (pins.py, gate.py). The record always keeps the real
status: failing or xfailing the test is the expectations' view of it, never written to a report.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from grl_conformance.core import controls, registry
from grl_conformance.core.check import Check
from grl_conformance.core.outcome import Outcome
from grl_conformance.results import expectations


@dataclass(frozen=True)
class Verdict:
    cell: dict  # the report's record: impl, check, status, detail, duration_s, summary, ...
    fail: str = ""  # the cell's test fails with this message (no traceback)
    xfail: str = ""  # the cell's test, when it would pass, is reported xfail with this reason
    note: tuple[str, str] | None = None  # (verdict, message): a stale or missing pin, for the summary


def final(impl: registry.Impl, check: Check, outcome: Outcome, control: Outcome,
          pins: expectations.Pins | None = None, baseline=None) -> Verdict:
    """The cell's one judgement, in the order that decides it:

    1. its column's control: a control that did not pass judges no row (core/controls.py);
    2. the baseline (plugin/gate.py, `Gate`): a regression fails the test;
    3. the pins: a reference row that deviates fails the test; a stale or missing pin is a note;
    4. the baseline again: a failure it already lists is xfail ("known").
    """
    cell = record(impl, check, controls.judged(outcome, control, check.control))
    regression = baseline.regression(cell) if baseline is not None else None
    if regression:
        return Verdict(cell, fail=regression)
    note = None
    if pins is not None:
        verdict, message = pins.judge(cell)
        if verdict == expectations.DEVIATES:
            return Verdict(cell, fail=message)
        note = (verdict, message) if message else None
    known = baseline.known(cell) if baseline is not None else None
    return Verdict(cell, xfail=known or "", note=note)


@pytest.hookimpl(trylast=True)
def pytest_grl_cell_status(config: pytest.Config, impl: registry.Impl, check: Check,
                           outcome: Outcome, control: Outcome) -> Verdict:
    hook = config.hook
    return final(impl, check, outcome, control,
                 pins=hook.pytest_grl_cell_pins(config=config, impl=impl),
                 baseline=hook.pytest_grl_cell_baseline(config=config, impl=impl))


def record(impl: registry.Impl, check: Check, outcome: Outcome) -> dict:
    """The report's cell: a non-pass carries the command that reruns it alone."""
    cell = {"impl": impl.name, "check": check.id, "status": outcome.status,
            "detail": outcome.detail, "duration_s": outcome.duration_s}
    if outcome.summary:
        cell["summary"] = outcome.summary
    if outcome.status != "pass":
        cell["repro"] = repro_command(impl, check)
    if outcome.warnings:
        cell["warnings"] = list(outcome.warnings)
    return cell


def repro_command(impl: registry.Impl, check: Check) -> str:
    """The command that reruns one cell alone (a built-in row by name, any other by its ref)."""
    import shlex

    ref = impl.name if impl.ref.startswith(registry.IMPLS_PACKAGE + ".") else impl.ref
    return (f"grl-harness run {shlex.quote(ref or impl.name)} --area {check.area} -n 0 "
            f"-- -k {shlex.quote(f'{impl.name}-{check.id}')}")
