"""The check catalogue.

A check is a function `check(impl) -> Outcome | str | None` registered with `@check("id")`.
It signals a wrong result by raising `Failed`, an unrunnable environment with `Skipped`, and
an inapplicable kind with `NotApplicable`; returning a string passes with that detail.
Checks live in one module per area (eager, compile, distributed, cuda, train): the area is
the module's name. Adding a check is adding one decorated function to the right module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

# Areas in report column order; each is a module `harness.checks.<area>` that may not exist yet.
AREAS = ("eager", "compile", "transforms", "distributed", "cuda", "train")


@dataclass(frozen=True)
class Check:
    id: str
    area: str
    fn: Callable
    doc: str
    # The check runs the implementation only in processes of its own (distributed ranks): the
    # harness calls it directly instead of sending it to the row's sandboxed child.
    own_processes: bool = False


_CHECKS: dict[str, Check] = {}


def check(check_id: str, *, own_processes: bool = False) -> Callable[[Callable], Callable]:
    """Register a check function under its public id (ids are part of the report format).

    own_processes: the check never runs implementation code in the calling process (it launches
    and judges processes of its own, with their own timeout and cleanup).
    """
    if "-" in check_id or " " in check_id:
        raise ValueError(f"check id {check_id!r} must not contain '-' or spaces")

    def register(fn: Callable) -> Callable:
        area = fn.__module__.rsplit(".", 1)[-1]
        if check_id in _CHECKS and _CHECKS[check_id].fn is not fn:
            raise ValueError(f"check {check_id!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _CHECKS[check_id] = Check(check_id, area, fn, doc, own_processes)
        return fn

    return register


def all_checks() -> list[Check]:
    """Every registered check, area by area in `AREAS` order, in definition order within one."""
    for area in AREAS:
        try:
            importlib.import_module(f"{__name__}.{area}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{area}":
                raise
    order = {a: i for i, a in enumerate(AREAS)}
    return sorted(_CHECKS.values(), key=lambda c: order.get(c.area, len(order)))


def checks_in(area: str) -> list[Check]:
    return [c for c in all_checks() if c.area == area]


def get(check_id: str) -> Check:
    all_checks()
    return _CHECKS[check_id]
