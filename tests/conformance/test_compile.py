"""The compatibility matrix, compile columns: one test per (implementation, check).

A cell's status is a finding written to the report, not a test failure, except for the
repo's own reference rows, whose real behaviour is pinned in REFERENCE below.
"""
AREA = "compile"

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    "2.13/cpu": {
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
