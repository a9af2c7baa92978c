"""The compatibility matrix, eager columns: one test per (implementation, check).

A cell's status is a finding written to the report, not a test failure, except for the
repo's own reference rows, whose real behaviour is pinned in REFERENCE below.
"""
AREA = "eager"

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    "2.13/cpu": {
        # builds lambda with torch.tensor(alpha), a float32 0-d tensor: a float64 input gets a
        # float32-rounded alpha (alpha=0.1: relative error 1.5e-8, float64 allows 4.4e-16)
        ("naive_function", "backward.reversal"): "fail",
        # save_for_backward(x, lambda_): the whole input is held for a backward that never reads it
        ("naive_function", "memory.saved"): "fail",
        # value = x.detach() + (-alpha) * (x - x.detach()) (as one lerp): inf - inf = nan, so the
        # detach trick cannot carry +-inf through the forward
        ("detach", "forward.identity"): "fail",
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
