"""Running one cell: (implementation, check) -> Outcome. Nothing an implementation does escapes."""
from __future__ import annotations

import time
import traceback
import warnings

from harness.checks import Check
from harness.outcome import (ERROR, FAIL, NA, PASS, SKIP, XFAIL, CheckSignal, Outcome)
from harness.registry import Impl

DETAIL_LIMIT = 400


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    """Squash a message into one report-friendly line."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def describe_exception(exc: BaseException) -> str:
    """`Type: message` plus the innermost frame outside torch, where it helps locate the cause."""
    message = str(exc).strip().splitlines()
    head = f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and "/harness/" not in f.filename
              and "/numpy/" not in f.filename]  # numpy's __getattr__ is never the culprit
    if frames:
        f = frames[-1]
        head += f" (at {f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
    return head


def run_check(impl: Impl, check: Check) -> Outcome:
    """Run one cell. Loading errors, exceptions and signals all become outcomes."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            impl.api  # load first, so a load failure reads as such
            result = check.fn(impl)
        if isinstance(result, Outcome):
            outcome = result
        else:
            outcome = Outcome(PASS, "" if result is None else str(result))
    except CheckSignal as signal:
        outcome = Outcome(signal.status, signal.detail, summary=signal.summary)
    except Exception as exc:  # noqa: BLE001 - the whole point: a crash is a red cell
        outcome = Outcome(ERROR, describe_exception(exc))
    outcome = _apply_claims(impl, check.id, outcome)
    return Outcome(outcome.status, one_line(outcome.detail), round(time.perf_counter() - start, 4),
                   one_line(outcome.summary, 40))


def _apply_claims(impl: Impl, check_id: str, outcome: Outcome) -> Outcome:
    """A declared-unsupported cell that raises is an expected failure; a pass is news.

    A `fail` stays a fail: not claiming a feature does not make a silently wrong gradient safe,
    and it must stand out in the report whatever the entry declares.
    """
    reason = impl.unsupported.get(check_id)
    if reason is None:
        return outcome
    if outcome.status == FAIL:
        return Outcome(FAIL, f"{outcome.detail} (not claimed: {reason})", summary=outcome.summary)
    if outcome.status == ERROR:
        return Outcome(XFAIL, f"not claimed ({reason}): was {outcome.status}: {outcome.detail}",
                       summary=outcome.summary)
    if outcome.status == PASS:
        return Outcome(PASS, f"unexpected pass: declared unsupported ({reason}). {outcome.detail}",
                       summary="unexpected")
    return outcome


__all__ = ["run_check", "one_line", "describe_exception", "ERROR", "FAIL", "NA", "PASS", "SKIP"]
