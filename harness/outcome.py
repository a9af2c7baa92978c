"""Outcomes of a check: the status vocabulary of DESIGN.md and how checks signal it."""
from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, ERROR, SKIP, NA, XFAIL = "pass", "fail", "error", "skip", "n/a", "xfail"
STATUSES = (PASS, FAIL, ERROR, SKIP, NA, XFAIL)

# Worst first: a silent wrong result outranks a crash, which outranks not running.
SEVERITY = {FAIL: 0, ERROR: 1, XFAIL: 2, SKIP: 3, NA: 4, PASS: 5}


@dataclass(frozen=True)
class Outcome:
    status: str
    detail: str = ""
    duration_s: float = 0.0
    summary: str = ""  # a few words shown in the matrix cell, e.g. "1 recompile", "+1 kernel"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


class CheckSignal(Exception):
    """Raised inside a check to end it with a status other than error."""

    status = ERROR

    def __init__(self, detail: str = "", summary: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.summary = summary


class Failed(CheckSignal):
    """The implementation ran and gave a wrong result."""

    status = FAIL


class Skipped(CheckSignal):
    """The environment cannot run this check (no CUDA, package missing)."""

    status = SKIP


class NotApplicable(CheckSignal):
    """The check does not apply to this kind of implementation."""

    status = NA


class Errored(CheckSignal):
    """The implementation raised or hung where it should have worked; detail says how."""

    status = ERROR


def expect(condition: bool, detail: str) -> None:
    """Fail the check with `detail` unless `condition` holds."""
    if not condition:
        raise Failed(detail)


def passed(detail: str = "", summary: str = "") -> Outcome:
    return Outcome(PASS, detail, summary=summary)
