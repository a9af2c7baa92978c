"""The compatibility matrix, transform columns (export, TorchScript, torch.func, opcheck): one test per (implementation, check).

A cell's status is a finding written to the report, not a test failure, except for the
repo's own reference rows, whose real behaviour is pinned in REFERENCE below.
"""
AREA = "transforms"

# How the reference rows really behave; unlisted cells of a listed version must pass.
REFERENCE = {
    "2.13/cpu": {
        # export traces through the autograd.Function's forward (a view_as) and drops its
        # backward: the exported program runs, but its gradient is the unreversed one.
        ("naive_function", "export"): "fail",
        # Old-style Function (forward(ctx, ...), no setup_context): torch.func refuses it.
        ("naive_function", "func.vmap"): "error",
        ("naive_function", "func.grad"): "error",
        ("naive_function", "func.jvp"): "error",
        # No torch.library op: opcheck does not apply.
        ("naive_function", "opcheck"): "n/a",
        # jit.script passes on 2.13 (the Function runs as an opaque Python op; the detail says
        # save/load does not round-trip). On 2.14 scripting any autograd.Function raises.
        # Rows below measured from branch `impls` at b36325a (read-only copy) on 2.13.0/cpu.
        # hook: export, jit.script and func.jvp are declared unsupported by the entry (xfail).
        # vmap is not: a hook registered on the batched tensor inside vmap never runs for the
        # gradient of the unbatched output, so backward through vmap is unreversed (a real
        # silent failure of the kind, +upstream instead of -alpha * upstream).
        ("hook", "export"): "xfail",
        ("hook", "jit.script"): "xfail",
        ("hook", "func.vmap"): "fail",
        ("hook", "func.jvp"): "xfail",
        ("hook", "opcheck"): "n/a",
        ("detach", "opcheck"): "n/a",
        # custom_op + register_autograd: torch.func.grad refuses the autograd.Function that
        # custom_op generates (no setup_context), and forward mode has no rule: zero tangent.
        ("library_op", "func.grad"): "error",
        ("library_op", "func.jvp"): "fail",
        # A C++ torch::autograd::Function cannot be used with functorch grad/jvp at all.
        ("cpp_op", "func.grad"): "error",
        ("cpp_op", "func.jvp"): "error",
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
