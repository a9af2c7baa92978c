"""pytest plugin: one test per (implementation, check), the matrix at the end of the run.

A conformance test module declares its area (`AREA = "eager"`) and a test taking the
`grl_cell` fixture; the plugin parametrizes it over every registered implementation and every
check of that area. Cell outcomes travel to the controller in `user_properties`, so
`pytest -n 2` (xdist) works; only the controller writes reports.

A red cell is a finding, not a failing test. pytest's exit code reflects the harness
itself (self-tests) and, when a baseline is given, regressions against it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness import checks as catalogue
from harness import hypothesis_profiles  # noqa: F401 - loads the profile for this run
from harness import registry
from harness.runner import run_check

CELL_KEY = "grl_cell"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grl", "grl-conformance")
    group.addoption("--grl-impl", action="append", default=[], metavar="MODULE:ATTR",
                    help="add an implementation from outside the repo (repeatable; also "
                         "GRL_IMPLS=MODULE:ATTR,...). ATTR: a registry Impl, an nn.Module class "
                         "with set_alpha, or a function (x, alpha).")
    group.addoption("--grl-only", action="append", default=[], metavar="NAME[,NAME]",
                    help="run only these implementation rows")
    group.addoption("--grl-report-dir", default=None, metavar="DIR",
                    help="where to write the reports (default: reports/ in the repo root)")
    group.addoption("--grl-no-report", action="store_true",
                    help="print the matrix but write no report files")
    group.addoption("--grl-baseline", default=None, metavar="FILE|auto",
                    help="torch-upgrade gate: fail every cell that is worse than in this "
                         "expectations file (a pass no longer passing, or a new fail); 'auto' "
                         "picks reports/baselines/torch-<this major.minor or the newest older>.json")
    group.addoption("--grl-update-baseline", action="store_true",
                    help="write this run's cells as reports/baselines/torch-<major.minor>.json")
    group.addoption("--grl-baseline-dir", default=None, metavar="DIR",
                    help="where expectations files live for 'auto' and --grl-update-baseline "
                         "(default: reports/baselines in the repo root)")


def _only(config: pytest.Config) -> list[str]:
    return [n.strip() for arg in config.getoption("--grl-only") for n in arg.split(",") if n.strip()]


def pytest_configure(config: pytest.Config) -> None:
    try:
        config._grl_impls = registry.collect(config.getoption("--grl-impl"), _only(config))
    except registry.LoadError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(MatrixSession(config), "grl-matrix-session")
    from harness import gate_plugin  # the torch-upgrade gate (--grl-baseline / --grl-update-baseline)

    gate_plugin.configure(config)


def impls_of(config: pytest.Config) -> list[registry.Impl]:
    return config._grl_impls


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CELL_KEY not in metafunc.fixturenames:
        return
    area = getattr(metafunc.module, "AREA", None)
    if area is None:
        raise pytest.UsageError(f"{metafunc.module.__name__}: conformance module needs AREA = '<area>'")
    checks = catalogue.checks_in(area)
    params = [pytest.param((impl, chk), id=f"{impl.name}-{chk.id}", marks=pytest.mark.conformance)
              for impl in impls_of(metafunc.config) for chk in checks]
    metafunc.parametrize(CELL_KEY, params, indirect=True)


class Cell:
    """What a conformance test runs: one implementation through one check."""

    def __init__(self, impl: registry.Impl, check: catalogue.Check, item: pytest.Item) -> None:
        self.impl, self.check, self.item = impl, check, item

    def run(self, reference: dict | None = None) -> dict:
        """Run the cell; for the repo's own rows, compare with `reference` (see below)."""
        outcome = run_check(self.impl, self.check)
        cell = {"impl": self.impl.name, "check": self.check.id, "status": outcome.status,
                "detail": outcome.detail, "duration_s": outcome.duration_s}
        if outcome.summary:
            cell["summary"] = outcome.summary
        meta = {"name": self.impl.name, "kind": self.impl.kind, "origin": self.impl.origin}
        self.item.user_properties.append((CELL_KEY, json.dumps({"cell": cell, "impl": meta})))
        gate = getattr(self.item.config, "_grl_gate", None)
        if gate is not None:
            gate(cell)
        if reference is not None and self.impl.reference:
            table = reference.get(reference_key())
            want = None if table is None else table.get((self.impl.name, self.check.id), "pass")
            if want is not None and want != cell["status"]:
                pytest.fail(f"reference row {self.impl.name} / {self.check.id} should be {want} on "
                            f"{reference_key()}, got {cell['status']}: {cell['detail']}", pytrace=False)
        return cell


def reference_key() -> str:
    """Which column of a conformance module's REFERENCE table applies: `<major.minor>/<cpu|cuda>`.

    The repo's reference rows are the harness's own fixtures: where their expected behaviour
    is written down for this torch, a deviation means the harness broke, and the test fails.
    """
    import torch

    major_minor = ".".join(torch.__version__.split(".")[:2])
    return f"{major_minor}/{'cuda' if torch.cuda.is_available() else 'cpu'}"


def cell_key_from_nodeid(nodeid: str) -> tuple[str, str] | None:
    """(impl, check) from `...::test_cell[<impl>-<check>]`; check ids never contain '-'."""
    if not nodeid.startswith("tests/conformance/") or not nodeid.endswith("]") or "[" not in nodeid:
        return None
    param = nodeid[nodeid.index("[") + 1:-1]
    impl, sep, check_id = param.rpartition("-")
    return (impl, check_id) if sep else None


@pytest.fixture
def grl_cell(request: pytest.FixtureRequest) -> Cell:
    impl, chk = request.param
    return Cell(impl, chk, request.node)


class MatrixSession:
    """Controller-side plugin: gathers cells from all workers, prints and writes the matrix."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.start = time.time()
        self.cells: dict[tuple[str, str], dict] = {}
        self.impl_meta: dict[str, dict] = {}
        self.written: list[Path] = []
        self.doc: dict | None = None
        self.slug = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = False
        for key, value in report.user_properties:
            if key == CELL_KEY and report.when == "call":
                data = json.loads(value)
                self.cells[(data["cell"]["impl"], data["cell"]["check"])] = data["cell"]
                self.impl_meta[data["impl"]["name"]] = data["impl"]
                found = True
        if report.failed and not found:
            self._record_crash(report)

    def _record_crash(self, report: pytest.TestReport) -> None:
        """A cell whose test died before recording (an xdist worker killed by a segfault in
        native code, say) is an error cell, not a hole in the matrix."""
        key = cell_key_from_nodeid(report.nodeid)
        if key is None or key in self.cells:
            return
        text = str(report.longrepr).strip().splitlines()
        reason = text[-1] if text else "test crashed"
        self.cells[key] = {"impl": key[0], "check": key[1], "status": "error",
                           "detail": f"crashed before reporting: {reason}"[:400],
                           "duration_s": round(report.duration, 4)}

    def report_doc(self) -> dict | None:
        if not self.cells:
            return None
        if self.doc is None:
            from harness import env as environment
            from harness import report

            impls = [{"name": i.name, "kind": i.kind, "origin": i.origin}
                     for i in impls_of(self.config)]
            known = {i["name"] for i in impls}
            impls += [m for n, m in self.impl_meta.items() if n not in known]
            checks = [c.id for c in catalogue.all_checks()]
            env = environment.describe()
            self._add_latency(impls, env)
            self.slug = f"{env['torch'].split('+')[0]}-{env['device_slug']}"
            areas: dict[str, list[str]] = {}
            for chk in catalogue.all_checks():
                areas.setdefault(chk.area, []).append(chk.id)
            self.doc = report.build(env, impls, checks, self.cells.values(),
                                    time.time() - self.start, areas)
        return self.doc

    def _add_latency(self, impls: list[dict], env: dict) -> None:
        """Each row's overhead from the latest latency sweep of this torch and device, if any."""
        from harness import latency_report

        dirs = [self.config.getoption("--grl-report-dir") or "", self.config.rootpath / "reports"]
        try:
            doc = latency_report.find([d for d in dirs if d], env["torch"], env["device_slug"])
            latency_report.annotate(impls, doc, source="latency sweep")
        except Exception:  # noqa: BLE001 - a stale or odd sweep file never breaks the matrix
            pass

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        doc = self.report_doc()
        if doc is None or self.config.getoption("--grl-no-report"):
            return
        from harness import report

        directory = self.config.getoption("--grl-report-dir") or (self.config.rootpath / "reports")
        self.written = report.write(doc, Path(directory), self.slug)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:
        doc = self.report_doc()
        if doc is None:
            return
        from harness import report

        terminalreporter.section("GRL compatibility matrix")
        terminalreporter.write_line(report.render_terminal(doc))
        for path in self.written:
            terminalreporter.write_line(f"report written: {path}")
