"""The compatibility matrix, compile columns: one test per (implementation, check).

A cell's status is a finding written to the report, not a test failure, except for the
repo's own reference rows, whose real behaviour is pinned in REFERENCE below.
"""
AREA = "compile"

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    "2.13/cpu": {
        # naive_function passes every compile column on 2.13/cpu (measured): its lambda is a
        # tensor attribute, so set_alpha is seen (1 recompile, when np.float64 makes it a
        # float64 tensor), and dynamo traces the Function's backward into one graph that
        # inductor fuses (+0 kernels).
        # hook and detach pass every compile column (measured on 2.13.0/cpu).
        # library_op and cpp_op pass compile.fusion with "+1 kernel": a custom op is opaque to
        # inductor, its clone runs as a kernel of its own (a cost, shown in the cell, not a fail).
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
