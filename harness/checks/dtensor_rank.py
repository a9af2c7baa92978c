"""The per-rank side of the `dtensor` check (harness/checks/distributed.py launches it through
`grl_conformance.checks.distributed_worker`, which calls `run` after the process group is up).

Tensor parallelism hands a GRL a DTensor activation. On a 1-D device mesh over the ranks, for
the placements Shard(0), Shard(1) and Replicate, both forms of the GRL (layer with set_alpha,
and fn) get a DTensor distributed from a global tensor; the output must be a DTensor whose
full tensor is the input, and the input's gradient (full tensor) must be exactly
`-alpha * upstream` computed in one process on the global tensors (alphas are powers of two:
exact). Every rank runs the same calls (the collectives of `full_tensor` match); rank 0 judges:
`run` returns its `Outcome` (`passed`) or raises `Failed`/`Errored` as a check does.
"""
from __future__ import annotations

import torch

from grl_conformance.checks.kit.forms import forms
from grl_conformance.checks.kit.inputs import randn
from grl_conformance.checks.kit.judge import identical, is_reversal
from grl_conformance.core.outcome import Errored, Failed, Outcome, describe_failure, passed

ALPHAS = (0.5, 0.25)


def _placements():
    from torch.distributed.tensor import Replicate, Shard

    return (("Shard(0)", Shard(0)), ("Shard(1)", Shard(1)), ("Replicate", Replicate()))


def run(impl_ref: str, rank: int, world: int, device, note: str) -> Outcome | None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, distribute_tensor

    from grl_conformance.core.registry import resolve

    impl = resolve(impl_ref)
    mesh = init_device_mesh(device.type, (world,))
    results = []  # (where, output full, input full, upstream, grad full or None, alpha, placements)
    where = "building the GRL"
    try:
        for name, placement in _placements():
            for alpha in ALPHAS:
                for label, grl in forms(impl, alpha):
                    where = f"{label}, {name}, alpha {alpha}"
                    x = randn(4, 6, dtype=torch.float32, seed=11)
                    c = randn(4, 6, dtype=torch.float32, seed=12)
                    xd = distribute_tensor(x.to(device), mesh, [placement]).requires_grad_(True)
                    y = grl(xd)
                    if not isinstance(y, DTensor):
                        results.append((where, None, x, c, None, alpha, type(y).__name__))
                        continue
                    out = y.full_tensor().detach().cpu()
                    if out.shape != x.shape:  # same metadata on every rank: all skip backward
                        results.append((where, out, x, c, None, alpha, str(list(y.placements))))
                        continue
                    # the upstream gradient laid out as the output is (a sharding rule may
                    # legitimately change the placement)
                    cd = distribute_tensor(c.to(device), mesh, list(y.placements))
                    (y * cd).sum().backward()
                    grad = None if xd.grad is None else xd.grad.full_tensor().cpu()
                    results.append((where, out, x, c, grad, alpha, str(list(y.placements))))
    except Exception as exc:  # noqa: BLE001 - every rank raises the same; rank 0 reports it
        if rank != 0:
            return None
        message = describe_failure(exc)
        hint = ""
        if "sharding strategy" in message:
            hint = (" (a custom op needs a DTensor sharding rule: "
                    "torch.distributed.tensor.experimental.register_sharding)")
        # no summary: the launcher never passed one on for an error (the cells stay as they were)
        raise Errored(f"{where}: {message}{hint}") from None
    if rank != 0:
        return None
    kept = set()
    for where, out, x, c, grad, alpha, placed in results:
        if out is None:
            raise Failed(f"{where}: a DTensor input came back as a plain {placed}",
                         summary="not a DTensor")
        if not identical(out, x):
            raise Failed(f"{where}: the output's full tensor is not the input (shape "
                         f"{tuple(out.shape)}, output placements {placed})", summary="wrong output")
        if grad is None:
            raise Failed(f"{where}: no gradient reached the DTensor input", summary="no gradient")
        if not is_reversal(grad, c, alpha):
            how = " (not reversed)" if identical(grad, c) else ""
            raise Failed(f"{where}: the input gradient's full tensor is not -alpha * upstream of "
                         f"the single-process computation{how}", summary="wrong gradient")
        kept.add(placed)
    return passed(f"DTensor on a {world}-rank mesh, placements Shard(0)/Shard(1)/Replicate, layer "
                  f"and fn, alpha {'/'.join(map(str, ALPHAS))}: output full tensor equals the "
                  "input, input gradient equals -alpha * upstream of one process (exact); output "
                  f"placements {', '.join(sorted(kept))}{note}")
