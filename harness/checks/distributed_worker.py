"""The per-rank side of the distributed checks (`ddp.eager`, `ddp.compiled`, `fsdp`).

One function, `run_rank`, runs on every rank under either launcher:

- inside the harness: `grl_conformance.checks.distributed` starts world size 2 with
  `torch.multiprocessing.start_processes` (forkserver by default, spawn on request) and
  `file://` init in a temporary directory;
- on a cluster: torchrun sets RANK / WORLD_SIZE / MASTER_ADDR and this module's `main` uses
  `env://` init, for example on two nodes with one process per GPU:

      torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \
          --rdzv-endpoint HOST:29500 -m grl_conformance.checks.distributed_worker ddp.eager \
          grl_conformance.impls.naive_function:IMPL --out result.json

Every rank runs the same short DANN-style sequence (alpha changes between steps through
`set_alpha`, an SGD step after each), records its gradients, and rank 0 judges them against a
single-process reference over the same global batch, computed with a trusted in-harness GRL.
Only verification gathers results between ranks (`all_gather_object`); training uses DDP and
FSDP2 themselves, no hand-written communication.

Rank 0's verdict is an `Outcome` (core/outcome.py) like every other cell's: `verdict` returns
`passed(...)` or raises `Failed`; it crosses the process boundary as `Outcome.to_dict` JSON.

Kept lean on purpose: a rank imports torch, this module, the check kit (its DANN, batch and
loss, the judge), the reference GRL, the process helpers, the registry and the
implementation, nothing else from the harness.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from grl_conformance.checks import dtensor_rank
from grl_conformance.checks.kit.inputs import batch
from grl_conformance.checks.kit.judge import first_bitwise_difference, grads_mismatch
from grl_conformance.checks.kit.models import Dann, dann_loss
from grl_conformance.core import compat
from grl_conformance.core.outcome import CheckSignal, Failed, Outcome, describe_failure, passed
from grl_conformance.core.procs import enter_child, frames_outside_torch
from grl_conformance.core.reference import ReferenceGRL
from grl_conformance.core.tolerances import tolerance

MODES = {"ddp.eager": "ddp", "ddp.compiled": "ddp_compiled", "fsdp": "fsdp",
         "dtensor": "dtensor"}  # dtensor: harness/checks/dtensor_rank.py runs the rank
BATCH = 4  # rows per rank
WORLD = [2]  # world size of this run, set by run_rank (the global batch depends on it)
DTYPE = torch.float32  # what DANN trains in; float64 alpha precision is backward.reversal's job


def dann_alpha(p: float) -> float:
    """The DANN schedule (Ganin et al., JMLR 2016, 5.2.2)."""
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


# (alpha, who calls set_alpha). The last step is the rank-0-only probe: a `@rank_zero_only`
# callback or a checkpoint restored on rank 0 alone. Under DDP a buffer alpha reaches rank 1
# through the buffer broadcast at the next forward; a plain attribute does not.
SCHEDULE = ((dann_alpha(0.05), "all"), (dann_alpha(0.15), "all"), (0.0, "all"),
            (dann_alpha(0.30), "all"), (dann_alpha(0.60), "rank0"))
DONE = "done"  # rank<r>.done: the rank's work and verdict are written; only teardown is left
WITHIN = "reduction"  # the tolerance: only the reduction order differs from the reference


def global_batch(step: int, device) -> tuple[torch.Tensor, ...]:
    """The global batch of a step (the kit's `batch`): BATCH rows per rank, the same on every rank."""
    return tuple(t.to(device=device, dtype=DTYPE) for t in batch(step, BATCH * WORLD[0]))


def build(grl: nn.Module, device) -> Dann:
    """The kit's DANN (seeded: the same initial weights on every rank and in the reference)."""
    return Dann(grl).to(device=device, dtype=DTYPE)


def reference_grads(device, world: int) -> list[dict]:
    """Single process, global batch, trusted GRL: the gradients of every step.

    Two candidates per step: alpha as every rank was told ("synced"), and alpha as each rank
    last set it itself ("per_rank"); they differ only in the rank-0-only step.
    """
    out = []
    ref = ReferenceGRL()  # given one alpha per batch row: each rank's rows get that rank's alpha
    net = build(ref, device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    local = [1.0] * world  # the alpha each rank has set (layers start at alpha=1.0)
    for step, (alpha, who) in enumerate(SCHEDULE):
        local = [alpha if who == "all" or r == 0 else local[r] for r in range(world)]
        x, yt, yd = global_batch(step, device)
        cands = {}
        for name, per_rank in (("synced", [alpha] * world), ("per_rank", local)):
            ref.set_alpha(torch.tensor(per_rank, dtype=DTYPE, device=device).repeat_interleave(BATCH)[:, None])
            net.zero_grad(set_to_none=True)
            dann_loss(net(x), yt, yd, mean=True).backward()  # mean: DDP averages ranks
            cands[name] = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
        for n, p in net.named_parameters():  # train on with the synced gradient
            p.grad = cands["synced"][n]
        opt.step()
        out.append(cands)
    return out


def options() -> dict:
    """The knobs, read from the environment by the launching process and passed to the ranks
    (a forkserver child sees the server's environment, not the launcher's current one)."""
    return {
        "timeout_s": float(os.environ.get("GRL_DIST_TIMEOUT", 120)),
        "device": os.environ.get("GRL_DIST_DEVICE", ""),  # "" = cuda when available, else cpu
        "compile_backend": os.environ.get("GRL_DDP_COMPILE_BACKEND", "aot_eager"),
    }


def _device_and_backend(local_rank: int, world: int, want: str) -> tuple[torch.device, str, str]:
    want = want or ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda":
        if torch.cuda.device_count() >= min(world, int(os.environ.get("LOCAL_WORLD_SIZE", world))):
            return torch.device("cuda", local_rank), "nccl", ""
        # One GPU for two ranks: NCCL refuses two ranks on one device; gloo takes CUDA tensors.
        return torch.device("cuda", 0), "gloo", " (one GPU shared by the ranks: gloo on CUDA tensors)"
    return torch.device("cpu"), "gloo", ""


def _wrap(check_id: str, net: nn.Module, device, backend: str, opts: dict):
    mode = MODES[check_id]
    if mode in ("ddp", "ddp_compiled"):
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" and backend == "nccl" else None
        model = DDP(net, device_ids=ids)
        if mode == "ddp_compiled":
            model = torch.compile(model, backend=opts["compile_backend"])
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    fully_shard(net, mesh=mesh)
    return net


def _full(grad):
    return grad.full_tensor() if hasattr(grad, "full_tensor") else grad


def train_steps(check_id: str, impl_ref: str, rank: int, world: int, device, backend: str,
                opts: dict) -> list:
    """Every rank: the schedule through DDP / FSDP2, gradients recorded after each backward."""
    from grl_conformance.core.registry import resolve

    impl = resolve(impl_ref)
    compiled = MODES[check_id] == "ddp_compiled"
    with contextlib.ExitStack() as stack:
        # compiled: a fresh count, and no silent fallback to eager (core/compat.py)
        counters = stack.enter_context(compat.fresh_dynamo()) if compiled else None
        return _train_steps(check_id, impl, rank, device, backend, opts, counters)


def _train_steps(check_id, impl, rank, device, backend, opts, counters) -> list:
    layer = impl.api.layer(alpha=1.0)
    net = build(layer, device)
    model = _wrap(check_id, net, device, backend, opts)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    recorded = []
    for step, (alpha, who) in enumerate(SCHEDULE):
        if who == "all" or rank == 0:
            layer.set_alpha(alpha)
        x, yt, yd = global_batch(step, device)
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        opt.zero_grad(set_to_none=True)
        dann_loss(model(x[rows]), yt[rows], yd[rows], mean=True).backward()
        grads = {}
        for n, p in net.named_parameters():
            if p.grad is None and not n.startswith("grl."):
                raise RuntimeError(f"step {step}: no gradient reached {n}")
            if p.grad is not None:
                grads[n] = _full(p.grad).detach().to("cpu", copy=True)
        recorded.append(grads)
        opt.step()
    if counters is not None and not counters["stats"]["unique_graphs"]:
        raise RuntimeError("torch.compile compiled no graph: the DDP model ran eagerly, so this "
                           "cell would test ddp.eager again")
    return recorded


def verdict(check_id: str, per_rank: list[list[dict]], reference: list[dict], note: str) -> Outcome:
    """Rank 0's verdict (pure, unit-testable): `passed(...)`, or `Failed` raised."""
    fsdp = MODES[check_id] == "fsdp"
    last = len(SCHEDULE) - 1
    for step in range(len(SCHEDULE)):
        for r in range(1, len(per_rank)):
            off = first_bitwise_difference(per_rank[0][step], per_rank[r][step])
            if off is not None:
                raise Failed(f"step {step}: rank {r}'s gradient of {off[0]} differs from rank 0's "
                             f"(max abs diff {off[1]:.3g}); replicas diverge", summary="ranks disagree")
        got, want = per_rank[0][step], reference[step]
        if step < last:
            off = grads_mismatch(got, want["synced"], WITHIN)
            if off is not None:
                raise Failed(f"step {step} (every rank called set_alpha({SCHEDULE[step][0]:.4g})): "
                             "the gradients differ from the single-process reference over the "
                             f"global batch ({off})", summary=f"wrong grad step {step}")
    got, want = per_rank[0][last], reference[last]
    a_new, a_old = SCHEDULE[last][0], SCHEDULE[last - 1][0]
    off = grads_mismatch(got, want["synced"], WITHIN)
    if off is None:
        probe, summary = (f"a rank-0-only set_alpha({a_new:.4g}) reached every rank (alpha is state "
                          "the wrapper synchronises)"), "alpha synced"
    elif grads_mismatch(got, want["per_rank"], WITHIN) is None:
        probe, summary = (f"a rank-0-only set_alpha({a_new:.4g}) stayed on rank 0; the other ranks "
                          f"kept {a_old:.4g} (alpha is rank-local: call set_alpha on every rank)"), \
            "alpha per rank"
    else:
        raise Failed(f"rank-0-only set_alpha({a_new:.4g}) step: the gradients match neither every "
                     f"rank using {a_new:.4g} nor ranks keeping their own alpha ({off})",
                     summary="wrong grad (rank-0 step)")
    across = ("identical on every rank" if not fsdp else "full_tensor() of the sharded gradients")
    extra = sorted(set(per_rank[0][0]) - set(reference[0]["synced"]))
    if extra:  # the GRL's own parameters: not in the reference model, reported, not judged
        note = f"; the GRL has trainable parameters {', '.join(extra)}" + note
    return passed(f"{len(SCHEDULE) - 1} steps with set_alpha on every rank (DANN schedule, 0 included) "
                  f"match the single-process reference (float32, {tolerance(WITHIN).text()}), "
                  f"{across}; {probe}{note}", summary=summary)


def run_rank(check_id: str, impl_ref: str, rank: int, world: int, init_method: str,
             opts: dict, local_rank: int | None = None, finished=None) -> Outcome | None:
    """One rank's whole job. Returns rank 0's verdict, an `Outcome` (None on other ranks).

    finished: called with that result before the process group is torn down, so a launcher
    can stop waiting for the rank there: torch's own teardown (`destroy_process_group`) can hang
    after the work is done (torch 2.6 and 2.7, gloo, seen with correct GRLs in several rows)."""
    WORLD[0] = world
    torch.set_num_threads(1)
    device, backend, note = _device_and_backend(rank if local_rank is None else local_rank, world,
                                                opts["device"])
    if MODES[check_id] == "fsdp" and backend == "gloo" and device.type == "cuda":
        device, note = torch.device("cpu"), " (fsdp on cpu/gloo: one GPU cannot host two NCCL ranks)"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=max(opts["timeout_s"], 1.0)))
    try:
        try:
            outcome = _rank_work(check_id, impl_ref, rank, world, device, backend, note, opts)
        except CheckSignal as signal:  # rank 0's verdict of fail (or error), raised as in a check
            outcome = Outcome.of(signal)
        if finished is not None:
            finished(outcome)
        return outcome
    finally:
        dist.destroy_process_group()


def _rank_work(check_id, impl_ref, rank, world, device, backend, note, opts) -> Outcome | None:
    if MODES[check_id] == "dtensor":
        return dtensor_rank.run(impl_ref, rank, world, device,
                                note + f" [{backend} on {device.type}, world size {world}]")
    recorded = train_steps(check_id, impl_ref, rank, world, device, backend, opts)
    gathered = [None] * world
    dist.all_gather_object(gathered, recorded)
    if rank != 0:
        return None
    reference = reference_grads(torch.device("cpu"), world)
    where = f" [{backend} on {device.type}, world size {world}" + (
        f", compiled with backend {opts['compile_backend']} "
        "around the DDP module" if check_id == "ddp.compiled" else "") + "]"
    return verdict(check_id, gathered, reference, note + where)


def where_stuck(dump: str, frames: int = 3) -> str:
    """The main thread's innermost frames outside torch, from a rank's faulthandler dump."""
    return frames_outside_torch(dump, "spawn_entry", frames)


def spawn_entry(rank: int, check_id: str, impl_ref: str, world: int, init_method: str,
                out_dir: str, opts: dict) -> None:
    """Target of `torch.multiprocessing.start_processes` (first argument: the rank)."""
    # The row child's life cycle (core/procs.py). On timeout the parent sends SIGUSR1 first: every
    # thread's Python stack lands in this file (faulthandler writes from the signal handler, even
    # while a collective blocks).
    stacks = open(os.path.join(out_dir, f"rank{rank}.stack"), "w")  # noqa: SIM115 - lives with the rank
    enter_child(opts["mark"], stacks, opts.get("owner"))

    def finished(outcome: Outcome | None) -> None:
        if outcome is not None:
            with open(os.path.join(out_dir, "verdict.json"), "w") as fh:
                json.dump(outcome.to_dict(), fh)
        open(os.path.join(out_dir, f"rank{rank}.{DONE}"), "w").close()  # noqa: SIM115

    try:
        run_rank(check_id, impl_ref, rank, world, init_method, opts, finished=finished)
    except BaseException as exc:
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as fh:
            fh.write(describe_failure(exc))
        raise


def main(argv: list[str] | None = None) -> int:
    """torchrun entry: `python -m grl_conformance.checks.distributed_worker CHECK_ID MODULE:ATTR [--out FILE]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m grl_conformance.checks.distributed_worker",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("check_id", choices=sorted(MODES))
    parser.add_argument("impl_ref", help="MODULE:ATTR, as grl_conformance.core.registry.resolve takes it")
    parser.add_argument("--out", help="rank 0 writes its verdict (JSON) here")
    args = parser.parse_args(argv)
    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        parser.error("run under torchrun (RANK, WORLD_SIZE, MASTER_ADDR unset); inside the "
                     "harness the check spawns its own ranks")
    sys.path.insert(0, os.getcwd())
    outcome = run_rank(args.check_id, args.impl_ref, int(os.environ["RANK"]),
                       int(os.environ["WORLD_SIZE"]), "env://", options(),
                       int(os.environ.get("LOCAL_RANK", 0)))
    if outcome is not None:
        print(json.dumps(outcome.to_dict()))
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(outcome.to_dict(), fh)
        return 0 if outcome.status == "pass" else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
