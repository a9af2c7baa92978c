"""Each column's control (core/controls.py), run once per session and shared between processes.

Here, not in the pytest glue: it runs controls in the sandbox and shares them through files and
locks, which is where a cell runs, not how pytest reports it. Under xdist the workers share a
directory (the controller makes and removes it): the first to reach a column holds its lock
while it runs the control, the others then read the outcome it wrote.
"""
from __future__ import annotations

import json
import os

from grl_conformance.core import controls, registry
from grl_conformance.core.check import Check
from grl_conformance.core.outcome import Outcome
from grl_conformance.isolation.sandbox import Sandbox


class ControlRuns:
    """Each column's control outcome, run once per session.

    A worker that finds a control locked by another runs a control nobody has started yet
    meanwhile (every worker reaches the same columns at the start, so otherwise one runs them
    all while the others wait).
    """

    def __init__(self, directory: str | None, columns: list[Check]) -> None:
        self.directory = directory
        self.columns = columns  # this session's columns, in the order the rows reach them
        self.known: dict[str, Outcome] = {}
        self.ran: list[tuple[Check, Outcome]] = []  # run here, not yet reported

    def outcome(self, check: Check, box: Sandbox) -> Outcome:
        if check.id in self.known:
            return self.known[check.id]
        if not self.directory or not os.path.isdir(self.directory):
            self._record(check, self._run(check, box), ran=True)
            return self.known[check.id]
        while check.id not in self.known and not self._take(check, box, wait=False):
            if not any(self._take(other, box, wait=False) for other in self._untouched()):
                self._take(check, box, wait=True)
        return self.known[check.id]

    def take_ran(self) -> list[tuple[Check, Outcome]]:
        """The controls this process ran since the last call: the cell at hand reports them."""
        ran, self.ran = self.ran, []
        return ran

    def _path(self, check: Check) -> str:
        return os.path.join(self.directory, f"{check.id}.json")

    def _untouched(self):
        """Columns whose control nobody has written yet (another worker may be running one)."""
        return (c for c in self.columns if c.id not in self.known and not os.path.exists(self._path(c)))

    def _take(self, check: Check, box: Sandbox, wait: bool) -> bool:
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
                    self._record(check, Outcome.from_dict(json.load(fh)), ran=False)
                return True
            outcome = self._run(check, box)
            with open(path + ".tmp", "w") as fh:
                json.dump(outcome.to_dict(), fh)
            os.replace(path + ".tmp", path)
        self._record(check, outcome, ran=True)
        return True

    def _record(self, check: Check, outcome: Outcome, ran: bool) -> None:
        self.known[check.id] = outcome
        if ran:
            self.ran.append((check, outcome))

    @staticmethod
    def _run(check: Check, box: Sandbox) -> Outcome:
        try:
            impl = registry.resolve(controls.control_ref(check.control))
        except Exception as exc:  # noqa: BLE001 - a control that cannot load judges nothing
            return Outcome("error", f"cannot load the control {check.control}: {exc}")
        return box.run(impl, check)
