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
        # hook: jit.script is declared unsupported by the entry (TorchScript cannot compile the
        # hook closure): its error shows as xfail. export, vmap and jvp lose the reversal
        # silently, and a silent wrong gradient stays `fail` whatever the entry declares:
        # export drops the hook, a hook registered on the batched tensor inside vmap never runs
        # for the unbatched output, and forward mode never runs a hook (tangent = +t).
        ("hook", "export"): "fail",
        ("hook", "jit.script"): "xfail",
        ("hook", "func.vmap"): "fail",
        ("hook", "func.jvp"): "fail",
        ("hook", "opcheck"): "n/a",
        ("detach", "opcheck"): "n/a",
        # custom_op + register_autograd: torch.func.grad refuses the autograd.Function that
        # custom_op generates (no setup_context; declared unsupported, so xfail), and forward
        # mode has no rule: a zero tangent, silently wrong, so fail.
        ("library_op", "func.grad"): "xfail",
        ("library_op", "func.jvp"): "fail",
        # A C++ torch::autograd::Function cannot be used with functorch grad/jvp at all
        # (declared unsupported: the refusal is an expected failure).
        ("cpp_op", "func.grad"): "xfail",
        ("cpp_op", "func.jvp"): "xfail",
    },
}


def test_cell(grl_cell):
    grl_cell.run(REFERENCE)
