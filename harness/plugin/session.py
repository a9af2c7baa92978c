"""The controller's session plugin: it only dispatches pytest's events, to the matrix
(matrix.py: the cells and the report) and to the display (display.py). Registered on the
controller alone (lifecycle.py): workers send their cells, only the controller writes."""
from __future__ import annotations

from pathlib import Path

import pytest

from grl_conformance.plugin import display
from grl_conformance.plugin.matrix import Matrix

NAME = "grl-matrix-session"  # its name in pytest's plugin manager (the gate looks it up by it)


class MatrixSession:
    def __init__(self, config: pytest.Config) -> None:
        self.matrix = Matrix(config)
        self.written: list[Path] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.matrix.add(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.written = self.matrix.write()

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:
        display.summary(terminalreporter, self.matrix, self.written)
