"""The compatibility matrix, train columns: does a DANN trained through the GRL adapt?

A cell's status is a finding written to the report, not a test failure, except for the
repo's own reference rows, whose real behaviour is pinned in REFERENCE below.
"""
AREA = "train"

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    "2.13/cpu": {
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
