"""The compatibility matrix, eager columns: one test per (implementation, check).

A cell's status is a finding written to the report, not a test failure, except for the
package's own reference rows, whose expected cells per torch live in the expectations files
(reports/baselines/torch-<major.minor>.json; see harness/results/expectations.py).
"""
AREA = "eager"


def test_cell(grl_cell):
    grl_cell.run()
