"""The compatibility matrix, CUDA-graph columns. Every cell is `skip` without CUDA."""
AREA = "cuda"

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    "2.13/cpu": {
        # No CUDA on a cpu machine: the checks cannot run, and say so.
        ("naive_function", "cuda.graph"): "skip",
        ("naive_function", "cuda.graphed_callables"): "skip",
        ("naive_function", "cuda.reduce_overhead"): "skip",
        ("naive_function", "cuda.alpha_after_capture"): "skip",
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
