"""A positive control for every column: a red cell must be the implementation's fault.

Before a column judges any row in an environment, it runs once on a GRL known to be right: the
harness's reference GRL (core/reference.py), or, where a column cannot run an autograd.Function
or needs a registered op, its plain composite GRL or a minimal torch.library op from the same
module (`@check(..., control="composite")`): the plainest GRL that can run the column. When the
control passes, the column judges every row as usual. When it does not (a torch without an API, a private setting the
harness uses renamed, a harness bug), the column cannot tell a broken GRL from a broken harness:
every row's cell in it becomes `skip` with the summary "not judged" and a detail that starts
with the control's own outcome, never `fail`/`error` charged to the row and never `pass`.

Pure logic here (no torch at import); the pytest plugin runs each control once per session and
column, in the sandbox like any row, and shares the outcome between xdist workers.
"""
from __future__ import annotations

from grl_conformance.core.outcome import (
    ERROR,
    FAIL,
    NA,
    NOT_JUDGED,
    PASS,
    SKIP,
    Outcome,
    one_line,
)
from grl_conformance.core.registry import GRL, IMPLS_PACKAGE, Impl


def _api(layer: str, fn: str):
    def load() -> GRL:
        from grl_conformance.core import reference

        return GRL(getattr(reference, layer), getattr(reference, fn))

    return load


REFERENCE = Impl(name="reference", kind="function", load=_api("ReferenceGRL", "gradient_reversal"),
                 origin="grl_conformance.core.reference (the harness's own GRL)",
                 ref=f"{__name__}:REFERENCE")
COMPOSITE = Impl(name="composite", kind="detach", load=_api("CompositeGRL", "composite_reversal"),
                 origin="grl_conformance.core.reference.CompositeGRL (plain aten arithmetic)",
                 ref=f"{__name__}:COMPOSITE")
LIBRARY = Impl(name="library", kind="library", load=_api("LibraryOpGRL", "library_reversal"),
               origin="grl_conformance.core.reference.LibraryOpGRL (a minimal torch.library op)",
               ref=f"{__name__}:LIBRARY")
CONTROLS = {c.name: c for c in (REFERENCE, COMPOSITE, LIBRARY)}


def control_ref(name: str) -> str:
    """Where a child process finds the control named by a check's `control`: one of the
    harness's own plain GRLs (`reference`, `composite`, `library`), or a built-in row."""
    return CONTROLS[name].ref if name in CONTROLS else f"{IMPLS_PACKAGE}.{name}:IMPL"


def judged(row: Outcome, control: Outcome, control_name: str) -> Outcome:
    """The cell a row gets in a column, given that column's control outcome here."""
    if control.status == PASS:
        return row
    if control.status in (SKIP, NA) and row.status == SKIP:
        return row  # the environment cannot run the column: the row says why itself
    if control.status in (FAIL, ERROR):
        why = f"the control ({control_name}) is {control.status} here"
    else:
        why = f"the control ({control_name}) could not run here ({control.status})"
    detail = f"not judged: {why}: {control.detail}" if control.detail else f"not judged: {why}"
    return Outcome(SKIP, one_line(detail), row.duration_s, NOT_JUDGED)

