"""The harness's own hook specifications, alone in one module as pytest-xdist's `newhooks.py`:
what another plugin of the harness, or a user's conftest, may implement.

Every policy decision about a cell is a `firstresult` hook: the plugin's own implementation
answers last (`trylast`), so another implementation that returns a value wins, and one that
returns None leaves the decision to the next.
"""
from __future__ import annotations

import pytest


@pytest.hookspec(firstresult=True)
def pytest_grl_cell_status(config, impl, check, outcome, control):
    """The verdict on one cell (plugin/verdict.py, `Verdict`): its report record, and whether
    its test fails, is xfail or leaves a note, from the row's outcome, its column's control
    outcome and the expectations that hold the row. Called once per cell, in the process that
    ran it. Default: `verdict.final` with the answers of the two hooks below."""


@pytest.hookspec(firstresult=True)
def pytest_grl_cell_pins(config, impl):
    """The expected cells the row is pinned to (results/expectations.py, `Pins`), or None.
    Default (plugin/pins.py): the package's reference rows, to the expectations file of this
    torch and device."""


@pytest.hookspec(firstresult=True)
def pytest_grl_cell_baseline(config, impl):
    """The torch-upgrade gate's baseline the row is held to (plugin/gate.py, `Gate`), or None.
    The gate implements it under `--grl-baseline`; without it no row is held."""


def pytest_grl_cell_finished(config, cell: dict) -> None:
    """Called in the process that ran it with each finished matrix cell (the report's dict:
    impl, check, status, summary, detail), after it is recorded and before its verdict fails
    or xfails its test. Raising `pytest.fail` here fails that cell's test."""
