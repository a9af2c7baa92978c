"""Warnings an implementation's own code raises are kept with its cells and listed per row."""
from __future__ import annotations

import warnings

from grl_conformance import checks as catalogue
from grl_conformance.core.runner import run_check
from grl_conformance.results import report
from tests.selftest.grls import FloatAlphaLayer, impl_of


class _DeprecatedLayer(FloatAlphaLayer):
    def forward(self, x):
        warnings.warn("alpha= is deprecated, use lambda_=", FutureWarning, stacklevel=1)
        return super().forward(x)


def test_a_rows_own_warning_is_kept_with_its_cell():
    outcome = run_check(impl_of("deprecated", _DeprecatedLayer), catalogue.get("forward.identity"))
    assert outcome.status == "pass"
    assert len(outcome.warnings) == 1 and outcome.warnings[0].startswith(
        "FutureWarning: alpha= is deprecated, use lambda_= (test_row_warnings.py:")


def test_a_quiet_row_has_none():
    outcome = run_check(impl_of("quiet", FloatAlphaLayer), catalogue.get("forward.identity"))
    assert outcome.warnings == ()


def test_the_report_lists_each_rows_warnings():
    cells = [{"impl": "a", "check": c, "status": "pass", "detail": "", "warnings": ["W: x (a.py:1)"]}
             for c in ("forward.identity", "backward.reversal")]
    doc = report.build({"torch": "2.13.0", "python": "3", "device": "cpu", "created": "now"},
                       [{"name": "a", "kind": "function", "origin": "x"}],
                       ["forward.identity", "backward.reversal"], cells, 1.0)
    assert report.row_warnings(doc) == {"a": ["W: x (a.py:1)"]}
    assert "a warns from its own code: W: x (a.py:1)" in report.render_terminal(doc)
    assert "## Warnings from the implementations' own code" in report.render_markdown(doc)
