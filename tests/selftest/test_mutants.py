"""Every check must be able to fail: each mutant trips the checks it is built to trip."""
from __future__ import annotations

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core.outcome import NOT_INSTALLED
from grl_conformance.core.runner import run_check
from tests.selftest.mutation import all_mutants

MUTANTS = all_mutants()
CASES = [pytest.param(m, cid, want, id=f"{m.impl.name}-{cid}")
         for m in MUTANTS for cid, want in m.trips.items()]
GUARDS = [pytest.param(m, cid, id=f"{m.impl.name}-{cid}") for m in MUTANTS for cid in m.passes]


def missing(requires) -> list[str]:
    """The hardware a mutant's trips need that this machine lacks."""
    import torch

    have = {"cuda": torch.cuda.is_available()}
    return [r for r in requires if not have.get(r, False)]


@pytest.mark.parametrize(("mutant", "check_id", "want"), CASES)
def test_mutant_is_flagged(mutant, check_id, want):
    outcome = run_check(mutant.impl, catalogue.get(check_id))
    if outcome.status == "skip" and outcome.summary == NOT_INSTALLED:
        pytest.skip(outcome.detail)  # an optional extra this environment lacks (install hint)
    if missing(mutant.requires):
        # Without the hardware the check must say so (skip with a reason), never pass.
        assert outcome.status == "skip" and outcome.detail, (
            f"{mutant.impl.name} needs {missing(mutant.requires)}: {check_id} should be skip "
            f"with a reason here, got {outcome.status}: {outcome.detail}")
        pytest.skip(f"trip needs {missing(mutant.requires)}; the cell is skip here: {outcome.detail}")
    assert outcome.status == want, (
        f"{mutant.impl.name} ({mutant.why}) should make {check_id} {want}, "
        f"got {outcome.status}: {outcome.detail}")
    assert outcome.detail, "a non-pass cell must say why"


@pytest.mark.parametrize(("mutant", "check_id"), GUARDS)
def test_mutant_not_flagged_elsewhere(mutant, check_id):
    outcome = run_check(mutant.impl, catalogue.get(check_id))
    if outcome.status == "skip" and outcome.summary == NOT_INSTALLED:
        pytest.skip(outcome.detail)
    if missing(mutant.requires) and outcome.status == "skip":
        pytest.skip(f"needs {missing(mutant.requires)}: {outcome.detail}")
    assert outcome.status == "pass", f"{check_id} flagged {mutant.impl.name} wrongly: {outcome.detail}"


def test_every_check_can_report_a_wrong_result():
    """A check whose only trips are `error` has never shown it catches a silently wrong result."""
    failing = {cid for m in MUTANTS for cid, want in m.trips.items() if want == "fail"}
    never = [c.id for c in catalogue.all_checks() if c.id not in failing]
    assert not never, f"checks no mutant makes `fail` (only `error`): {never}"


def test_every_check_is_tripped_by_a_mutant():
    tripped = {cid for m in MUTANTS for cid in m.trips}
    untested = [c.id for c in catalogue.all_checks() if c.id not in tripped]
    assert not untested, f"checks no mutant trips (a check that cannot fail is not done): {untested}"


def test_mutant_trips_name_real_checks():
    known = {c.id for c in catalogue.all_checks()}
    unknown = sorted({cid for m in MUTANTS for cid in (*m.trips, *m.passes)} - known)
    assert not unknown, f"mutants name unknown checks: {unknown}"
