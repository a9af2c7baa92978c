"""The compatibility matrix, train columns: does a DANN trained through the GRL adapt?

A cell's status is a finding written to the report, not a test failure, except for the
repo's own reference rows, whose real behaviour is pinned in REFERENCE below.
"""
AREA = "train"

# How the reference rows really behave; unlisted cells of a listed version must pass.
# Measured 2.13/cpu: naive_function passes both cells (target 0.964 eager, 0.961 compiled).
# hook, detach, library_op and cpp_op pass both too, with bitwise the same accuracies as
# naive_function: nothing to list.
REFERENCE = {
    "2.13/cpu": {
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
