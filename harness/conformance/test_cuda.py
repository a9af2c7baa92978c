"""The compatibility matrix, CUDA-graph columns. Every cell is `skip` without CUDA."""
AREA = "cuda"

_REFERENCE_ROWS = ("naive_function", "hook", "detach", "library_op", "cpp_op")
_CUDA_CHECKS = ("cuda.graph", "cuda.graphed_callables", "cuda.reduce_overhead",
                "cuda.alpha_after_capture")

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    # No CUDA on a cpu machine: the checks cannot run, and say so (never a pass).
    "2.13/cpu": {(row, check): "skip" for row in _REFERENCE_ROWS for check in _CUDA_CHECKS},
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
