"""The compatibility matrix, distributed columns: ddp.eager, ddp.compiled, fsdp.

Each cell spawns two ranks (a few seconds on 2 cores: two processes importing torch); see
docs/distributed.md for how to read the cells and how to run the same checks under torchrun.
"""
AREA = "distributed"

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    "2.13/cpu": {
        # naive_function passes all three. Its alpha is a plain tensor attribute, so a
        # rank-0-only set_alpha stays on rank 0 (summary "alpha per rank"): information, not a
        # failure; with set_alpha on every rank its gradients match the reference.
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
