"""pytest plugin: one test per (implementation, check), the matrix at the end of the run.

Installed with the package (entry point `pytest11: grl_conformance`); it stays inert until
conformance modules are collected (`pytest --pyargs grl_conformance.conformance`, or this repo's own
`pytest`). Importing it loads no torch.

A conformance test module declares its area (`AREA = "eager"`) and a test taking the
`grl_cell` fixture; the plugin parametrizes it over every registered implementation and every
check of that area. Each cell runs in its row's sandboxed child process (harness/isolation/sandbox.py),
never in the pytest process. Cell outcomes travel to the controller in `user_properties`, so
`pytest -n 2` (xdist) works; only the controller writes reports. Under xdist's default `load`
scheduling the cells of one row are kept on one worker (`pytest_xdist_make_scheduler`), so each
row has one child for the session.

Every column runs first on its control, a GRL known to be right (core/controls.py), once per
session: the first worker to reach the column runs it, the others read its outcome from a
directory the controller makes and removes. A column whose control does not pass judges no row.

A red cell is a finding, not a failing test: crashes and timeouts included. pytest's exit code
reflects the harness itself (self-tests, the reference pins) and, when a baseline is given,
regressions against it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core import controls, procs, registry
from grl_conformance.core.outcome import Outcome
from grl_conformance.isolation import sandbox
from grl_conformance.results import expectations

CELL_KEY = "grl_cell"
CONTROL_KEY = "grl_control"  # a column's control outcome, sent with the cell that ran it
NOTE_KEY = "grl_expectation_note"  # a stale or missing expectation of a reference row
WARMUP_KEY = "grl_sandbox_warmup"  # what this process's forkserver warmed up with, sent once
PINS_DIR = Path(__file__).resolve().parents[1] / "expectations"  # the repo's reports/baselines
_UNSET = object()


@dataclass
class State:
    """The plugin's per-process state, kept in `config.stash[STATE]`; each piece made on first use."""

    timeout: float
    controls_dir: str | None
    impls: list | None = None
    controls: ControlRuns | None = None
    box: sandbox.Sandbox | None = None
    pins: object = _UNSET  # expectations.Pins, or None when no file applies
    warmup_sent: bool = False


STATE = pytest.StashKey[State]()


def pytest_addhooks(pluginmanager) -> None:
    from grl_conformance.plugin import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grl", "grl-conformance")
    group.addoption("--grl-impl", action="append", default=[], metavar="MODULE:ATTR",
                    help="add an implementation from outside the repo (repeatable; also "
                         "GRL_IMPLS=MODULE:ATTR,...). ATTR: a registry Impl, an nn.Module class "
                         "with set_alpha, or a function (x, alpha).")
    group.addoption("--grl-only", action="append", default=[], metavar="NAME[,NAME]",
                    help="run only these implementation rows")
    group.addoption("--grl-no-builtin", action="store_true",
                    help="leave out this package's own rows (impls/), except those named by "
                         "--grl-only: the matrix of your --grl-impl rows alone")
    group.addoption("--grl-expectations", default=None, metavar="DIR",
                    help="where the reference rows' expectations files live (default: the "
                         "package's own, reports/baselines in the repo)")
    group.addoption("--grl-timeout", type=float, default=None, metavar="SECONDS",
                    help="per-cell limit; on expiry the row's process is killed and the cell is "
                         "error (also GRL_TIMEOUT; default 300)")
    group.addoption("--grl-keep-logs", default=None, metavar="DIR",
                    help="save the last 256 KiB of each row process's output in DIR when the "
                         "row ends (default: kept in memory for the footnotes, no files)")
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
    group.addoption("--grl-allow-unjudged", action="store_true",
                    help="with --grl-update-baseline: write the file even when a column's control "
                         "failed here (its cells are recorded as not judged)")
    group.addoption("--grl-baseline-dir", default=None, metavar="DIR",
                    help="where expectations files live for 'auto' and --grl-update-baseline "
                         "(default: reports/baselines in the repo root)")


def _only(config: pytest.Config) -> list[str]:
    return [n.strip() for arg in config.getoption("--grl-only") for n in arg.split(",") if n.strip()]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: a cell of the compatibility matrix")
    config.addinivalue_line("markers", "xdist_group(name): cells of one row share a worker")
    try:
        timeout = config.getoption("--grl-timeout")
        timeout = sandbox.timeout_from_env() if timeout is None else timeout
        if not timeout > 0:
            raise ValueError(f"--grl-timeout must be positive, got {timeout:g}")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not hasattr(config, "workerinput"):  # the controller: one directory for every worker
        import tempfile

        controls_dir = tempfile.mkdtemp(prefix="grl-controls-")
    else:
        controls_dir = config.workerinput.get("grl_controls_dir")
    config.stash[STATE] = State(timeout, controls_dir)
    if config.getoption("--grl-impl") or _only(config) or config.getoption("--grl-no-builtin"):
        impls_of(config)  # the user named rows: a bad name stops the run here, in one line
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(MatrixSession(config), "grl-matrix-session")
    from grl_conformance.plugin import gate  # the torch-upgrade gate (--grl-baseline ...)

    gate.configure(config)


def _runs_conformance(config: pytest.Config) -> bool:
    """Whether this session targets conformance modules (an unrelated run is left as it is)."""
    return any("conformance" in str(arg) for arg in config.args)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.box is not None:
        state.box.close()
        state.box = None
    if not hasattr(config, "workerinput") and state.controls_dir:
        import shutil

        shutil.rmtree(state.controls_dir, ignore_errors=True)
        state.controls_dir = None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: every worker shares the controller's controls directory."""
    node.workerinput["grl_controls_dir"] = node.config.stash[STATE].controls_dir


# The distributed area's cells launch ranks of their own and never use the row's child
# (`own_processes`; a self-test holds the two together): each is scheduled alone, so they fill
# a worker that ran out of rows instead of waiting behind their row. The controller reads test
# ids only, and the catalogue would import torch there.
OWN_PROCESSES_MODULE = "/test_distributed.py"


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist's default `load` scheduling, made to keep a row's cells on one worker: each row has
    one child for the session (one load, one first compile) instead of one per worker.

    By row, read from the cell's test id, not through `xdist_group` marks: xdist 3.8 tags a
    grouped test by rewriting a private attribute that pytest 9.2 no longer reads, so under
    `--dist loadgroup` every cell was scheduled alone and both workers started every row.
    """
    if getattr(config.option, "dist", "") != "load" or not _runs_conformance(config):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByRow(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            key = cell_key_from_nodeid(nodeid)
            if key is None or nodeid.split("::")[0].endswith(OWN_PROCESSES_MODULE):
                return nodeid  # its own scope: any worker, whenever one is free
            return f"row {key[0]}"

    return ByRow(config, log)


class ControlRuns:
    """Each column's control outcome, run once per session (core/controls.py).

    Under xdist the workers share a directory: the first to reach a column holds its lock while
    it runs the control, the others then read the outcome it wrote. A worker that finds a
    control locked by another runs a control nobody has started yet meanwhile (every worker
    reaches the same columns at the start, so otherwise one runs them all while the others wait).
    """

    def __init__(self, directory: str | None, columns: list[catalogue.Check]) -> None:
        self.directory = directory
        self.columns = columns  # this session's columns, in the order the rows reach them
        self.known: dict[str, Outcome] = {}
        self.ran: list[tuple[catalogue.Check, Outcome]] = []  # run here, not yet reported

    def outcome(self, check: catalogue.Check, box: sandbox.Sandbox) -> Outcome:
        if check.id in self.known:
            return self.known[check.id]
        if not self.directory or not os.path.isdir(self.directory):
            self._record(check, self._run(check, box), ran=True)
            return self.known[check.id]
        while check.id not in self.known and not self._take(check, box, wait=False):
            if not any(self._take(other, box, wait=False) for other in self._untouched()):
                self._take(check, box, wait=True)
        return self.known[check.id]

    def take_ran(self) -> list[tuple[catalogue.Check, Outcome]]:
        """The controls this process ran since the last call: the cell at hand reports them."""
        ran, self.ran = self.ran, []
        return ran

    def _path(self, check: catalogue.Check) -> str:
        return os.path.join(self.directory, f"{check.id}.json")

    def _untouched(self):
        """Columns whose control nobody has written yet (another worker may be running one)."""
        return (c for c in self.columns if c.id not in self.known and not os.path.exists(self._path(c)))

    def _take(self, check: catalogue.Check, box: sandbox.Sandbox, wait: bool) -> bool:
        """Read the control's outcome, or run it under its lock; False: another worker holds it."""
        import fcntl

        path = self._path(check)
        with open(path + ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return False
            if os.path.exists(path):  # released when the file closes
                with open(path) as fh:
                    self._record(check, Outcome(**json.load(fh)), ran=False)
                return True
            outcome = self._run(check, box)
            with open(path + ".tmp", "w") as fh:
                json.dump(asdict(outcome), fh)
            os.replace(path + ".tmp", path)
        self._record(check, outcome, ran=True)
        return True

    def _record(self, check: catalogue.Check, outcome: Outcome, ran: bool) -> None:
        self.known[check.id] = outcome
        if ran:
            self.ran.append((check, outcome))

    @staticmethod
    def _run(check: catalogue.Check, box: sandbox.Sandbox) -> Outcome:
        try:
            impl = registry.resolve(controls.control_ref(check.control))
        except Exception as exc:  # noqa: BLE001 - a control that cannot load judges nothing
            return Outcome("error", f"cannot load the control {check.control}: {exc}")
        return box.run(impl, check)


def controls_of(config: pytest.Config, session: pytest.Session) -> ControlRuns:
    state = config.stash[STATE]
    if state.controls is None:
        columns = {}
        for item in session.items:
            cell = getattr(item, "callspec", None) and item.callspec.params.get(CELL_KEY)
            if cell:
                columns.setdefault(cell[1].id, cell[1])
        state.controls = ControlRuns(state.controls_dir, list(columns.values()))
    return state.controls


def impls_of(config: pytest.Config) -> list[registry.Impl]:
    """The rows of this run, collected on first use (a run without conformance cells loads none)."""
    state = config.stash[STATE]
    if state.impls is None:
        try:
            state.impls = registry.collect(config.getoption("--grl-impl"), _only(config),
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


def pins_of(config: pytest.Config) -> expectations.Pins | None:
    """The reference rows' expected cells for this torch and device (None: no file applies)."""
    state = config.stash[STATE]
    if state.pins is _UNSET:
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


def sandbox_of(config: pytest.Config) -> sandbox.Sandbox:
    state = config.stash[STATE]
    if state.box is None:
        keep = config.getoption("--grl-keep-logs")
        state.box = sandbox.Sandbox(state.timeout, os.path.abspath(keep) if keep else None)
    return state.box


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


class Cell:
    """What a conformance test runs: one implementation through one check."""

    def __init__(self, impl: registry.Impl, check: catalogue.Check, item: pytest.Item) -> None:
        self.impl, self.check, self.item = impl, check, item

    def run(self) -> dict:
        """Run the cell in the row's sandbox; hold the package's reference rows to their pins."""
        config = self.item.config
        box = sandbox_of(config)
        runs = controls_of(config, self.item.session)
        control = runs.outcome(self.check, box)
        for check, outcome in runs.take_ran():
            self.item.user_properties.append((CONTROL_KEY, json.dumps(
                {"check": check.id, "control": check.control, **asdict(outcome)})))
        if self.impl.ref == controls.control_ref(self.check.control):
            outcome = control  # the row is this column's control: its cell already ran
        else:
            outcome = box.run(self.impl, self.check)
        outcome = controls.judged(outcome, control, self.check.control)
        state = config.stash[STATE]
        if not state.warmup_sent and procs.WARMUP:
            state.warmup_sent = True
            self.item.user_properties.append((WARMUP_KEY, json.dumps(procs.warmup_summary())))
        cell = {"impl": self.impl.name, "check": self.check.id, "status": outcome.status,
                "detail": outcome.detail, "duration_s": outcome.duration_s}
        if outcome.summary:
            cell["summary"] = outcome.summary
        if outcome.status != "pass":
            cell["repro"] = repro_command(self.impl, self.check)
        if outcome.warnings:
            cell["warnings"] = list(outcome.warnings)
        meta = {"name": self.impl.name, "kind": self.impl.kind, "origin": self.impl.origin}
        self.item.user_properties.append((CELL_KEY, json.dumps({"cell": cell, "impl": meta})))
        config.hook.pytest_grl_cell_finished(config=config, cell=cell)
        pins = pins_of(config) if self.impl.reference else None
        if pins is not None:
            verdict, message = pins.judge(cell)
            if verdict == expectations.DEVIATES:
                pytest.fail(message, pytrace=False)
            if message:
                self.item.user_properties.append((NOTE_KEY, json.dumps([verdict, message])))
        return cell


def repro_command(impl: registry.Impl, check: catalogue.Check) -> str:
    """The command that reruns one cell alone (a built-in row by name, any other by its ref)."""
    import shlex

    ref = impl.name if impl.ref.startswith(registry.IMPLS_PACKAGE + ".") else impl.ref
    return (f"grl-harness run {shlex.quote(ref or impl.name)} --area {check.area} -n 0 "
            f"-- -k {shlex.quote(f'{impl.name}-{check.id}')}")


def cell_key_from_nodeid(nodeid: str) -> tuple[str, str] | None:
    """(impl, check) from `.../conformance/test_<area>.py::test_cell[<impl>-<check>]` (xdist's
    loadgroup may append `@<group>`); check ids never contain '-'."""
    path, sep, name = nodeid.partition("::test_cell[")
    if not sep or "conformance/test_" not in path.replace("\\", "/") or "]" not in name:
        return None
    param = name[:name.rindex("]")]
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
        self.notes: dict[str, list[str]] = {}  # stale / unpinned expectations of reference rows
        self.controls: dict[str, dict] = {}  # column -> its control's outcome (core/controls.py)
        self.warmups: set[str] = set()  # each process's sandbox warm-up (core/procs.py)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = False
        for key, value in report.user_properties:
            if key == NOTE_KEY and report.when == "call":
                verdict, message = json.loads(value)
                self.notes.setdefault(verdict, []).append(message)
            if key == WARMUP_KEY and report.when == "call":
                self.warmups.add(json.loads(value))
            if key == CONTROL_KEY and report.when == "call":
                data = json.loads(value)
                self.controls[data.pop("check")] = data
            if key == CELL_KEY and report.when == "call":
                if not self.cells:
                    pins_of(self.config)  # the file the cells are held to, before any is written
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
            from grl_conformance.core import env as environment
            from grl_conformance.results import report

            impls = [{"name": i.name, "kind": i.kind, "origin": i.origin}
                     for i in impls_of(self.config)]
            known = {i["name"] for i in impls}
            impls += [m for n, m in self.impl_meta.items() if n not in known]
            checks = [c.id for c in catalogue.all_checks()]
            env = environment.describe()
            from grl_conformance.results.compare import harness_version

            env["harness"] = harness_version()
            if self.warmups:
                env["sandbox"] = " | ".join(sorted(self.warmups))
            self._add_latency(impls, env)
            self.slug = f"{env['torch'].split('+')[0]}-{env['device_slug']}"
            areas: dict[str, list[str]] = {}
            concerns: dict[str, str] = {}
            for chk in catalogue.all_checks():
                areas.setdefault(chk.area, []).append(chk.id)
                concerns[chk.id] = chk.concern
            self.doc = report.build(env, impls, checks, self.cells.values(),
                                    time.time() - self.start, areas, concerns)
            if self.controls:
                self.doc["controls"] = {c: self.controls[c] for c in checks if c in self.controls}
        return self.doc

    def _add_latency(self, impls: list[dict], env: dict) -> None:
        """Each row's overhead from the latest latency sweep of this torch and device, if any."""
        from grl_conformance.results import latency as latency_report

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
        from grl_conformance.results import report

        directory = self.config.getoption("--grl-report-dir") or (self.config.rootpath / "reports")
        self.written = report.write(doc, Path(directory), self.slug)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:
        doc = self.report_doc()
        if doc is None:
            return
        from grl_conformance.results import report

        terminalreporter.section("GRL compatibility matrix")
        pins = pins_of(self.config)
        terminalreporter.write_line(pins.choice.note if pins is not None else
                                    "expectations: none for this torch: the "
                                    "reference rows are not pinned")
        if doc.get("sandbox"):
            terminalreporter.write_line(doc["sandbox"])
        terminalreporter.write_line(report.render_terminal(doc))
        for verdict, messages in sorted(self.notes.items()):
            terminalreporter.write_line(f"{verdict.upper()} EXPECTATIONS ({len(messages)}):")
            for message in messages:
                terminalreporter.write_line(f"  {message}")
        for path in self.written:
            terminalreporter.write_line(f"report written: {path}")
        keep = self.config.getoption("--grl-keep-logs")
        if keep:
            terminalreporter.write_line(f"row logs (the last 256 KiB of each row process's output) "
                                        f"kept in: {os.path.abspath(keep)}")
