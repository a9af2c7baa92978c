"""pytest side of the torch-upgrade gate (comparison logic: harness/results/compare.py).

`--grl-baseline FILE|auto`: every cell is compared with the expectations file as it finishes.
A regression (a baseline `pass` that no longer passes, or a new `fail`) fails that cell's test
with the baseline and current status and the detail; a cell the baseline already lists as the
same `fail`/`error` is reported by pytest as xfail ("known failure in the expectations for this
torch"); the session summary lists regressions, improvements, changes, new and removed cells.
The report files always record the real status, never the gate's view of it.

`--grl-update-baseline`: write this run's cells as `reports/baselines/torch-<major.minor>.json`,
refused (one line, exit status NOT_HELD_EXIT) while a column's control fails here: such a file
would vouch for columns nobody judged. `--grl-allow-unjudged` writes it anyway.

The gate holds a column only where this run judged it (its control passed). A column it could
not judge fails the run with its own exit status and line (NOT HELD), never "regression" and
never "ok": whatever broke the control, the gate cannot vouch for that column on this torch.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grl_conformance.core import registry
from grl_conformance.results import compare as gate

BASELINE_DIR = Path("reports") / "baselines"
# The exit status of a run whose gate could not hold every column (a regression, 1, wins), and
# of a refused --grl-update-baseline: pytest's own statuses stop at 5.
NOT_HELD_EXIT = 6


class Gate:
    """Per-process: the baseline cells, and the gate's part of a cell's verdict (plugin/verdict.py,
    `final`): a regression fails the cell's test, a failure already listed is xfail. As a plugin
    it answers `pytest_grl_cell_baseline` (hookspec.py) for every row."""

    def __init__(self, path: Path, doc: dict) -> None:
        self.path, self.doc = path, doc
        self.cells = gate.index(doc["cells"])
        self.label = f"{path.name} ({gate.doc_label(doc, 'baseline')})"

    @pytest.hookimpl(trylast=True)
    def pytest_grl_cell_baseline(self, config: pytest.Config, impl) -> Gate:
        return self

    def regression(self, cell: dict) -> str | None:
        """Why the cell's test fails: a baseline `pass` that no longer passes, or a new `fail`."""
        base = self.cells.get((cell["impl"], cell["check"]))
        if gate.classify(base, cell) == gate.REGRESSION:
            return (f"REGRESSION vs {self.label}: {cell['impl']} / {cell['check']} was "
                    f"{base['status'] if base else 'absent'}, now {cell['status']}: "
                    f"{cell['detail']}")
        return None

    def known(self, cell: dict) -> str | None:
        """Why a failing cell's test is xfail: the baseline lists the same failure."""
        base = self.cells.get((cell["impl"], cell["check"]))
        if gate.classify(base, cell) == gate.KNOWN:
            return (f"known {cell['status']} listed in {self.label}: {cell['detail']}")
        return None


GATE = pytest.StashKey[Gate]()


def _baseline_dir(config: pytest.Config) -> Path:
    return Path(config.getoption("--grl-baseline-dir") or (config.rootpath / BASELINE_DIR))


def _torch_version() -> str:
    import torch

    return torch.__version__


def configure(config: pytest.Config) -> None:
    from grl_conformance.results import report

    choice = config.getoption("--grl-baseline")
    if choice:
        if choice == "auto":
            from grl_conformance.core import env

            path = gate.pick_baseline(_baseline_dir(config), _torch_version(), env.device_slug())
            if path is None:
                raise pytest.UsageError(
                    f"--grl-baseline auto: no expectations file for torch {_torch_version()} or "
                    f"older in {_baseline_dir(config)}; create one with --grl-update-baseline")
        else:
            path = Path(choice)
        try:
            doc = report.load(path)
        except (OSError, ValueError) as exc:
            raise pytest.UsageError(f"--grl-baseline {choice}: {exc}") from None
        config.stash[GATE] = Gate(path, doc)
        config.pluginmanager.register(config.stash[GATE], "grl-gate")
    if (choice or config.getoption("--grl-update-baseline")) and not hasattr(config, "workerinput"):
        config.pluginmanager.register(GateSession(config), "grl-gate-session")


class GateSession:
    """Controller side: the gate's summary, the exit status, and writing a baseline."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.comparison: gate.Comparison | None = None
        self.written: Path | None = None
        self.refused = ""  # why --grl-update-baseline wrote nothing
        self.held: gate.Held | None = None

    def _matrix(self):
        """The controller's matrix (plugin/matrix.py): its cells and its report document."""
        from grl_conformance.plugin import session as matrix_session

        session = self.config.pluginmanager.get_plugin(matrix_session.NAME)
        return session.matrix if session is not None else None

    def _compare(self) -> gate.Comparison | None:
        g = self.config.stash.get(GATE, None)
        matrix = self._matrix()
        if g is None or matrix is None or not matrix.cells:
            return None
        ran_rows = {c["impl"] for c in matrix.cells.values()}
        ran_checks = {c["check"] for c in matrix.cells.values()}
        registered = {i.name for i in registry.collect(self.config.getoption("--grl-impl"))}
        # A filtered run (--grl-only, -k, one test file) is compared on what it ran; a baseline
        # row that left the registry altogether shows as removed.
        base = [c for c in g.doc["cells"] if c["check"] in ran_checks
                and (c["impl"] in ran_rows or c["impl"] not in registered)]
        return gate.compare(base, matrix.cells.values())

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.comparison = self._compare()
        matrix = self._matrix()
        doc = matrix.report_doc() if matrix else None
        self.held = gate.columns_held(doc["cells"]) if doc else None
        if self.comparison and session.exitstatus == 0:
            if self.comparison.regressions:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            elif self.held and self.held.not_held:
                session.exitstatus = NOT_HELD_EXIT
        if self.config.getoption("--grl-update-baseline") and doc is not None:
            failed = gate.failed_controls(doc)
            if failed and not self.config.getoption("--grl-allow-unjudged"):
                self.refused = (f"expectations NOT written: the control of {len(failed)} column"
                                f"{'s' if len(failed) != 1 else ''} did not pass here "
                                f"({', '.join(failed[:6])}{', ...' if len(failed) > 6 else ''}), so "
                                "the file would vouch for columns nobody judged; fix the harness or "
                                "torch, or pass --grl-allow-unjudged")
                if session.exitstatus == 0:
                    session.exitstatus = NOT_HELD_EXIT
                return
            self.written = gate.baseline_path(_baseline_dir(self.config), doc["torch"],
                                              matrix.slug.split("-", 1)[-1])
            self.written.parent.mkdir(parents=True, exist_ok=True)
            self.written.write_text(json.dumps(gate.baseline_doc(doc), indent=1,
                                               ensure_ascii=False) + "\n", encoding="utf-8")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:
        g = self.config.stash.get(GATE, None)
        if self.comparison is not None and g is not None:
            matrix_doc = self._matrix().report_doc() or {}
            terminalreporter.section(f"GRL torch-upgrade gate vs {g.path}")
            old_label, new_label = gate.labels(g.doc, matrix_doc, "baseline", "this run")
            terminalreporter.write_line(gate.render(self.comparison, old_label, new_label))
            was, now = (str(d.get("device", "")).split(" (")[0] for d in (g.doc, matrix_doc))
            if was != now:
                terminalreporter.write_line(f"note: the baseline is from {was or '?'}, this run "
                                            f"on {now or '?'}: device-dependent cells may differ")
            made, running = g.doc.get("harness"), gate.harness_version()
            if made != running:
                terminalreporter.write_line(
                    f"warning: {g.path.name} was made with grl-conformance {made or '(unrecorded)'}, "
                    f"this is {running}: a cell can differ because a check changed, not torch")
            terminalreporter.write_line(gate.gate_line(self.comparison, self.held))
        if self.written is not None:
            terminalreporter.write_line(f"baseline written: {self.written}")
        if self.refused:
            terminalreporter.write_line(self.refused)
