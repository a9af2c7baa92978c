"""The check catalogue.

The contract of a check, one for every area:

- it is a function `check(impl) -> Outcome`, registered with `@check("id")`; the id is part of
  the public report format and documented in docs/checks.md;
- it returns `passed(detail, summary)` when the implementation behaved correctly, and only then;
- it ends with any other status by raising a signal from `grl_conformance.core.outcome`: `Failed` for a wrong
  result (wrong value, dtype, a lost reversal), `Errored` for a raise, crash or hang where it
  should have worked, `Skipped` when this environment cannot run it, `NotApplicable` when it does
  not apply to this kind of implementation. Any other exception reads as `error` with its message;
- `pass` means correct in that context, judged against the truth (`-alpha * upstream` at the
  GRL's input, or the same model with `grl_conformance.core.reference`'s trusted GRL); equality with the
  implementation's own eager run is never the verdict alone.

Returning anything but a passing `Outcome` is a harness bug: the registered function raises
TypeError for it, so the cell reads `error` instead of silently passing.

`@check("id", runs_backward=False)` marks the few checks that never run a backward pass; every
other check must fail a GRL that never reverses (tests/selftest/test_never_reverses.py).
Checks live in one module (or package) per area (`AREAS`): the area is the first name after
`grl_conformance.checks.` (`eager` for `checks.eager.memory`); columns come in definition
order (an area package imports its modules in column order). Each area
module names its default concern (`CONCERN`, the advice table's column); a check answering
another passes `concern=`. The record itself (`Check`) lives in core/check.py. The check kit
shared between areas is the package `kit/` (not an area: models, inputs, forms, the judge
family). Adding a check is adding one decorated function to the right module, a mutant it
catches and its entry in docs/checks.md.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

from grl_conformance.core.check import Check
from grl_conformance.core.outcome import PASS, Outcome

# Areas in report column order; each is a module `grl_conformance.checks.<area>`.
AREAS = ("eager", "compile", "transforms", "distributed", "cuda", "train")


_CHECKS: dict[str, Check] = {}


def check(check_id: str, *, concern: str | None = None, runs_backward: bool = True,
          own_processes: bool = False, control: str = "reference") -> Callable[[Callable], Callable]:
    """Register a check function under its public id (ids are part of the report format).

    concern: the column of the advice table it answers (core/check.py, CONCERNS); default the
    area module's `CONCERN`.
    own_processes: the check never runs implementation code in the calling process (it launches
    and judges processes of its own, with their own timeout and cleanup).
    control: what must pass the column before it judges any row ("reference", or a built-in
    row's name such as "witness"); see core/controls.py.
    """
    if "-" in check_id or " " in check_id:
        raise ValueError(f"check id {check_id!r} must not contain '-' or spaces")

    def register(fn: Callable) -> Callable:
        area = _area_of(fn.__module__)
        if check_id in _CHECKS and _CHECKS[check_id].fn.__wrapped__ is not fn:
            raise ValueError(f"check {check_id!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _CHECKS[check_id] = Check(check_id, area, _returns_a_pass(check_id, fn), doc,
                                  concern or fn.__globals__.get("CONCERN", ""), runs_backward,
                                  own_processes, control)
        return fn

    return register


def _area_of(module: str) -> str:
    """`eager` for `grl_conformance.checks.eager` and `grl_conformance.checks.eager.memory`;
    a module outside the catalogue (a self-test's) is its own last name."""
    inside = module.removeprefix(__name__ + ".")
    return inside.split(".", 1)[0] if inside != module else module.rsplit(".", 1)[-1]


def _returns_a_pass(check_id: str, fn: Callable) -> Callable:
    """`fn`, made to raise TypeError when it returns anything but a passing Outcome."""

    @functools.wraps(fn)
    def checked(impl) -> Outcome:
        result = fn(impl)
        if not isinstance(result, Outcome) or result.status != PASS:
            raise TypeError(f"check {check_id} returned {result!r}: a check returns passed(...) "
                            "or raises Failed/Errored/Skipped/NotApplicable")
        return result

    return checked


def all_checks() -> list[Check]:
    """Every registered check, area by area in `AREAS` order, in definition order within one.

    A missing area module is an error: its columns would otherwise vanish from the report.
    """
    for area in AREAS:
        importlib.import_module(f"{__name__}.{area}")
    order = {a: i for i, a in enumerate(AREAS)}
    return sorted(_CHECKS.values(), key=lambda c: order.get(c.area, len(order)))


def checks_in(area: str) -> list[Check]:
    return [c for c in all_checks() if c.area == area]


def get(check_id: str) -> Check:
    all_checks()
    return _CHECKS[check_id]
