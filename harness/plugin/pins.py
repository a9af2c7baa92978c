"""The reference rows' pins: the package's own rows are held to the expected cells of this
torch and device (results/expectations.py), so a harness change that moves one fails the run.

The default answer to `pytest_grl_cell_pins` (hookspec.py); the verdict (verdict.py) judges.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core import registry
from grl_conformance.plugin.state import STATE, UNSET
from grl_conformance.results import expectations

PINS_DIR = Path(__file__).resolve().parents[1] / "expectations"  # the repo's reports/baselines


def pins_of(config: pytest.Config) -> expectations.Pins | None:
    """The reference rows' expected cells for this torch and device (None: no file applies)."""
    state = config.stash[STATE]
    if state.pins is UNSET:
        import torch

        from grl_conformance.core import env
        from grl_conformance.results import report

        directory = config.getoption("--grl-expectations") or PINS_DIR
        choice = expectations.pick(directory, torch.__version__, env.device_slug())
        state.pins = None
        if choice is not None:
            try:
                doc = report.load(choice.path)
                expectations.validate(doc, choice.path, [c.id for c in catalogue.all_checks()],
                                      [i.name for i in registry.builtin_impls()])
            except (OSError, ValueError) as exc:
                raise pytest.UsageError(str(exc)) from None
            state.pins = expectations.Pins(doc, choice)
    return state.pins


@pytest.hookimpl(trylast=True)
def pytest_grl_cell_pins(config: pytest.Config, impl: registry.Impl) -> expectations.Pins | None:
    """Only the package's reference rows are pinned: a user's row is a finding, never a failure."""
    return pins_of(config) if impl.reference else None
