"""The session's forkserver as the isolation stage starts it: what it imports before it forks
anything (`PRELOAD`), handed to core/procs.py, which starts, proves and stops the server.

The list lives here because every name in it serves this stage (its preload module, torch,
the checks the rows' children run); core names none of them. A self-test checks that every
name imports: a stale one is skipped silently by multiprocessing and only makes each row slower.
"""
from __future__ import annotations

from grl_conformance.core import procs

# Imported once by the server, in this order; every child starts with them loaded. The first
# pins what the matrix needs before torch is imported, imports the rest itself, warms up and
# freezes the lot for the garbage collector (isolation/preload.py).
PRELOAD = ["grl_conformance.isolation.preload",
           "torch", "torch.distributed", "torch.nn.parallel", "torch.distributed.fsdp",
           "torch.distributed.device_mesh", "torch._dynamo", "torch._inductor.compile_fx",
           # what inductor imports lazily on its first compile: halves each row's first compile
           "torch._inductor.codegen.cpp", "torch._inductor.codecache", "torch._inductor.graph",
           "torch._inductor.lowering", "torch._inductor.scheduler", "torch._inductor.cpp_builder",
           "torch._inductor.codegen.cpp_wrapper_cpu", "torch._inductor.select_algorithm",
           "torch._inductor.fx_passes.joint_graph", "torch._inductor.fx_passes.post_grad",
           "torch.export", "torch.distributed.tensor", "hypothesis",
           "grl_conformance.core.registry", "grl_conformance.core.runner",
           "grl_conformance.checks.eager", "grl_conformance.checks.compile",
           "grl_conformance.checks.transforms", "grl_conformance.checks.train",
           "grl_conformance.checks.distributed_worker"]


def register() -> None:
    """Hand PRELOAD to core/procs.py before the server starts: a distributed check, which
    launches its ranks through core alone (`procs.start_method`), then forks them from the
    same preloaded server as the rows' children."""
    procs.use_preload(PRELOAD)


def context():
    """The forkserver context, its server started with PRELOAD and its warm-up proved."""
    register()
    return procs.ensure_forkserver()
