"""The compatibility matrix, eager columns: one test per (implementation, check).

A cell's status is a finding written to the report, not a test failure.
"""
AREA = "eager"


def test_cell(grl_cell):
    grl_cell.run()
