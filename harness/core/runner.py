"""Running one cell: (implementation, check) -> Outcome. Nothing an implementation does escapes."""
from __future__ import annotations

import time
import warnings

from grl_conformance.core.check import Check
from grl_conformance.core.outcome import (
    ERROR,
    FAIL,
    PASS,
    XFAIL,
    CheckSignal,
    Outcome,
    describe_exception,
    one_line,
)
from grl_conformance.core.registry import Impl


def run_check(impl: Impl, check: Check) -> Outcome:
    """Run one cell in this process. Loading errors, exceptions and signals become outcomes.

    The matrix never calls this in the pytest process: harness/isolation/sandbox.py runs it in the row's
    own child (or, for a check with `own_processes`, here, where it only launches its ranks).
    """
    start = time.perf_counter()
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # recorded, never printed: the row's own are kept
            if not check.own_processes:
                impl.api  # noqa: B018 - load first, so a load failure reads as such
            result = check.fn(impl)
        if isinstance(result, Outcome):
            outcome = result
        else:
            outcome = Outcome(PASS, "" if result is None else str(result))
    except CheckSignal as signal:
        outcome = Outcome.of(signal)
    except Exception as exc:  # noqa: BLE001 - the whole point: a crash is a red cell
        outcome = Outcome(ERROR, describe_exception(exc))
    outcome = _apply_claims(impl, check.id, outcome)
    return Outcome(outcome.status, one_line(outcome.detail), round(time.perf_counter() - start, 4),
                   one_line(outcome.summary, 40), _own_warnings(impl, caught))


def _own_warnings(impl: Impl, caught: list, limit: int = 5) -> tuple:
    """The warnings raised from the implementation's own source folder, deduplicated."""
    import inspect
    import os

    try:
        root = os.path.dirname(os.path.abspath(inspect.getfile(impl.api.layer))) + os.sep
    except Exception:  # noqa: BLE001 - no source file (a C++ class, a failed load): none kept
        return ()
    found: list[str] = []
    for w in caught:
        if not os.path.abspath(str(w.filename)).startswith(root):
            continue
        text = one_line(f"{w.category.__name__}: {w.message} "
                        f"({os.path.basename(str(w.filename))}:{w.lineno})", 200)
        if text not in found:
            found.append(text)
    return tuple(found[:limit])


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


__all__ = ["run_check"]
