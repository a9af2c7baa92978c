"""The worker side: one test per cell, the cell run in its row's sandbox, its record sent on.

A conformance test module declares its area (`AREA = "eager"`) and a test taking the
`grl_cell` fixture; `pytest_generate_tests` parametrizes it over every row and every check of
that area. The cell's outcome travels to the controller in the test's `user_properties`
(under the keys below), so `pytest -n 2` works and only the controller writes reports.
"""
from __future__ import annotations

import json

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core import controls, procs, registry
from grl_conformance.core.check import Check
from grl_conformance.isolation.control_runs import ControlRuns
from grl_conformance.plugin.state import STATE, impls_of, sandbox_of

# The fixture a conformance test takes, and the key its record travels under: one name, so a
# test parametrized by this plugin and the record the controller reads cannot drift apart.
CELL_KEY = "grl_cell"
CONTROL_KEY = "grl_control"  # a column's control outcome, sent with the cell that ran it
NOTE_KEY = "grl_expectation_note"  # a stale or missing expectation of a reference row
WARMUP_KEY = "grl_sandbox_warmup"  # what this process's forkserver warmed up with, sent once
XFAIL = pytest.StashKey[str]()  # the verdict's xfail reason, read when the test's report is made


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CELL_KEY not in metafunc.fixturenames:
        return
    area = getattr(metafunc.module, "AREA", None)
    if area is None:
        raise pytest.UsageError(f"{metafunc.module.__name__}: conformance module needs AREA = '<area>'")
    checks = catalogue.checks_in(area)
    params = [pytest.param((impl, chk), id=f"{impl.name}-{chk.id}",
                           marks=[pytest.mark.conformance, pytest.mark.xdist_group(impl.name)])
              for impl in impls_of(metafunc.config) for chk in checks]
    metafunc.parametrize(CELL_KEY, params, indirect=True)


@pytest.fixture
def grl_cell(request: pytest.FixtureRequest) -> Cell:
    impl, chk = request.param
    return Cell(impl, chk, request.node)


class Cell:
    """What a conformance test runs: one implementation through one check."""

    def __init__(self, impl: registry.Impl, check: Check, item: pytest.Item) -> None:
        self.impl, self.check, self.item = impl, check, item

    def run(self) -> dict:
        """Run the cell in the row's sandbox, judge it once (`pytest_grl_cell_status`), send its
        record, and fail or xfail its test as the verdict says."""
        config, props = self.item.config, self.item.user_properties
        box = sandbox_of(config)
        runs = controls_of(config, self.item.session)
        control = runs.outcome(self.check, box)
        for check, outcome in runs.take_ran():
            props.append((CONTROL_KEY, json.dumps(
                {"check": check.id, "control": check.control, **outcome.to_dict()})))
        if self.impl.ref == controls.control_ref(self.check.control):
            outcome = control  # the row is this column's control: its cell already ran
        else:
            outcome = box.run(self.impl, self.check)
        verdict = config.hook.pytest_grl_cell_status(config=config, impl=self.impl,
                                                      check=self.check, outcome=outcome,
                                                      control=control)
        state = config.stash[STATE]
        if not state.warmup_sent and procs.WARMUP:
            state.warmup_sent = True
            props.append((WARMUP_KEY, json.dumps(procs.warmup_summary())))
        meta = {"name": self.impl.name, "kind": self.impl.kind, "origin": self.impl.origin}
        props.append((CELL_KEY, json.dumps({"cell": verdict.cell, "impl": meta})))
        config.hook.pytest_grl_cell_finished(config=config, cell=verdict.cell)
        if verdict.fail:
            pytest.fail(verdict.fail, pytrace=False)
        if verdict.note:
            props.append((NOTE_KEY, json.dumps(list(verdict.note))))
        if verdict.xfail:
            self.item.stash[XFAIL] = verdict.xfail
        return verdict.cell


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A passing cell test whose cell is a failure the baseline already lists becomes xfail
    (the report's record keeps the real status)."""
    rep = yield
    reason = item.stash.get(XFAIL, "")
    if reason and rep.when == "call" and rep.passed:
        rep.outcome = "skipped"
        rep.wasxfail = reason
    return rep


def controls_of(config: pytest.Config, session: pytest.Session) -> ControlRuns:
    """This process's control runs, over the session's columns in the order its cells reach them."""
    state = config.stash[STATE]
    if state.controls is None:
        columns = {}
        for item in session.items:
            cell = getattr(item, "callspec", None) and item.callspec.params.get(CELL_KEY)
            if cell:
                columns.setdefault(cell[1].id, cell[1])
        state.controls = ControlRuns(state.controls_dir, list(columns.values()))
    return state.controls


def cell_key_from_nodeid(nodeid: str) -> tuple[str, str] | None:
    """(impl, check) from `.../conformance/test_<area>.py::test_cell[<impl>-<check>]` (xdist's
    loadgroup may append `@<group>`); check ids never contain '-'. The controller sees test ids
    only, never the items."""
    path, sep, name = nodeid.partition("::test_cell[")
    if not sep or "conformance/test_" not in path.replace("\\", "/") or "]" not in name:
        return None
    param = name[:name.rindex("]")]
    impl, sep, check_id = param.rpartition("-")
    return (impl, check_id) if sep else None
