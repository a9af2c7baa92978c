"""Outcomes of a check: the status vocabulary of docs/checks.md and how checks signal it."""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from functools import lru_cache

PASS, FAIL, ERROR, SKIP, NA, XFAIL = "pass", "fail", "error", "skip", "n/a", "xfail"
STATUSES = (PASS, FAIL, ERROR, SKIP, NA, XFAIL)
# The summary of a skip for an optional package that is not installed (an extra): such a cell is
# not judged in this environment, and a pin or a self-test that expects a verdict skips too.
NOT_INSTALLED = "not installed"
# The summary of a skip given to every row of a column whose control failed (core/controls.py).
NOT_JUDGED = "not judged"
# Summaries of a fail that is right only to a lower precision (checks.kit.judge.name_the_error):
# the reversal is there, a float64 user loses digits; the advice table tells it from a wrong one.
PRECISION_LOSS = ("alpha rounded to", "grad rounded to")


def is_not_judged(cell) -> bool:
    """Whether a report cell (a mapping) was left unjudged by its column's control."""
    return cell["status"] == SKIP and cell.get("summary") == NOT_JUDGED


@dataclass(frozen=True)
class Outcome:
    status: str
    detail: str = ""
    duration_s: float = 0.0
    summary: str = ""  # a few words shown in the matrix cell, e.g. "1 recompile", "+1 kernel"
    # warnings the implementation's own code raised during the cell (deprecations predict the
    # next upgrade's errors): "Category: message (file.py:line)", at most a few
    warnings: tuple = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")

    def to_dict(self) -> dict:
        """The record as plain JSON types (a distributed rank's verdict crosses a process
        boundary this way)."""
        return {"status": self.status, "detail": self.detail, "duration_s": self.duration_s,
                "summary": self.summary, "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: dict) -> Outcome:
        return cls(data["status"], data.get("detail", ""), data.get("duration_s", 0.0),
                   data.get("summary", ""), tuple(data.get("warnings", ())))

    @classmethod
    def of(cls, signal: CheckSignal) -> Outcome:
        """The record a raised signal ends a check with."""
        return cls(signal.status, signal.detail, summary=signal.summary)

    def ended(self) -> Outcome:
        """This record as a check ends with it: returned when it passed, raised as its signal
        (`Failed`, `Errored`, ...) otherwise."""
        if self.status == PASS:
            return self
        signal = {s.status: s for s in (Failed, Errored, Skipped, NotApplicable)}.get(self.status, Errored)
        raise signal(self.detail, summary=self.summary)


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


# --- text helpers: how details read in a report ------------------------------------------

DETAIL_LIMIT = 400


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    """Squash a message into one report-friendly line."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def exception_line(exc: BaseException) -> str:
    """`Type: message`: the line a traceback ends with (a long message's first line)."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")


def describe_exception(exc: BaseException) -> str:
    """`Type: message` plus the innermost frame outside torch, where it helps locate the cause."""
    head = exception_line(exc)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and not is_harness_file(f.filename)
              and "/numpy/" not in f.filename]  # numpy's __getattr__ is never the culprit
    if frames:
        f = frames[-1]
        head += f" (at {f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
    return head


def describe_failure(exc: BaseException, frames: int = 3) -> str:
    """`Type: message (at file:line fn <- ...)`: a child's last frames outside torch, one line."""
    message = " ".join(str(exc).split())[:200]
    tb = traceback.extract_tb(exc.__traceback__)
    tb = ([f for f in tb if "/torch/" not in f.filename] or tb)[-frames:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(tb))
    return f"{type(exc).__name__}: {message}" + (f" (at {where})" if where else "")


@lru_cache(maxsize=1)
def _own_dirs() -> tuple[str, str]:
    """The package's directory and its rows' (grl_conformance.impls: inside it once installed,
    the repo's impls/ folder in a checkout)."""
    import importlib.util

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.find_spec("grl_conformance.impls")
    impls = (spec.submodule_search_locations or [""])[0] if spec else ""
    return package + os.sep, (os.path.abspath(impls) + os.sep) if impls else ""


def is_harness_file(filename: str) -> bool:
    """Whether `filename` is the harness's own code (its rows in impls/ are not: they are code
    under test). Compared against the package's own directory, wherever it is installed."""
    path = os.path.abspath(filename)
    package, impls = _own_dirs()
    return path.startswith(package) and not (impls and path.startswith(impls))
