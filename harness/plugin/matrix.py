"""The controller's matrix: the cells every worker sent, and the report document built from
them (results/report.py). Knows nothing of pytest's events: session.py feeds it reports."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.plugin.cell import (
    CELL_KEY,
    CONTROL_KEY,
    NOTE_KEY,
    WARMUP_KEY,
    cell_key_from_nodeid,
)
from grl_conformance.plugin.pins import pins_of
from grl_conformance.plugin.state import impls_of


class Matrix:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.start = time.time()
        self.cells: dict[tuple[str, str], dict] = {}
        self.impl_meta: dict[str, dict] = {}
        self.doc: dict | None = None
        self.slug = ""
        self.notes: dict[str, list[str]] = {}  # stale / unpinned expectations of reference rows
        self.controls: dict[str, dict] = {}  # column -> its control's outcome (core/controls.py)
        self.warmups: set[str] = set()  # each process's sandbox warm-up (core/procs.py)

    def add(self, report: pytest.TestReport) -> None:
        """Take what a test's report carries (cell.py's user_properties)."""
        found = False
        for key, value in report.user_properties:
            if report.when != "call":
                continue
            if key == NOTE_KEY:
                verdict, message = json.loads(value)
                self.notes.setdefault(verdict, []).append(message)
            if key == WARMUP_KEY:
                self.warmups.add(json.loads(value))
            if key == CONTROL_KEY:
                data = json.loads(value)
                self.controls[data.pop("check")] = data
            if key == CELL_KEY:
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
        """The report document (None: no cell), built once, when the session ends."""
        if not self.cells:
            return None
        if self.doc is None:
            from grl_conformance.core import env as environment
            from grl_conformance.results import report
            from grl_conformance.results.compare import harness_version

            impls = [{"name": i.name, "kind": i.kind, "origin": i.origin}
                     for i in impls_of(self.config)]
            known = {i["name"] for i in impls}
            impls += [m for n, m in self.impl_meta.items() if n not in known]
            checks = [c.id for c in catalogue.all_checks()]
            env = environment.describe()
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

    def write(self) -> list[Path]:
        """The report files (none with --grl-no-report or without a cell)."""
        doc = self.report_doc()
        if doc is None or self.config.getoption("--grl-no-report"):
            return []
        from grl_conformance.results import report

        directory = self.config.getoption("--grl-report-dir") or (self.config.rootpath / "reports")
        return report.write(doc, Path(directory), self.slug)
