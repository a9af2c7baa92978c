"""A GRL that never reverses must fail every column that runs a backward.

`pass` means correct in that context, so a check that compares an implementation only with its
own eager run would pass this mutant in that column. The columns come from the catalogue (every
check registered without `runs_backward=False`), so a new check is covered the day it is added.
"""
from __future__ import annotations

import pytest
import torch

from grl_conformance import checks as catalogue
from grl_conformance.core.runner import run_check
from tests.selftest.mutants_reversal import NEVER_REVERSES
from tests.selftest.mutation import by_name

BACKWARD_CHECKS = [c for c in catalogue.all_checks() if c.runs_backward]


def test_the_catalogue_marks_only_a_few_checks_without_backward():
    """The exemption is the exception: a check marked by mistake would escape this file."""
    exempt = sorted(c.id for c in catalogue.all_checks() if not c.runs_backward)
    assert exempt == ["forward.identity", "memory.graph_freed", "memory.saved", "onnx.export",
                      "opcheck"], exempt


@pytest.mark.parametrize("check", BACKWARD_CHECKS, ids=lambda c: c.id)
def test_never_reversing_grl_fails(check):
    outcome = run_check(by_name(NEVER_REVERSES), check)
    if check.area == "cuda" and not torch.cuda.is_available():
        assert outcome.status == "skip" and outcome.detail, outcome
        pytest.skip(f"needs CUDA; the cell is skip here: {outcome.detail}")
    assert outcome.status == "fail", f"{check.id} did not fail a GRL that never reverses: {outcome}"
    assert outcome.detail
