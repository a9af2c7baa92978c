"""A GRL under real torch.distributed: DDP eager, DDP compiled, FSDP2 (docs/checks.md, 'Distributed').

Each cell starts world size 2 with `torch.multiprocessing` (`file://` init in a temporary
directory; start method forkserver by default, which forks each rank from one fresh server
process that imported torch once, or spawn with GRL_DIST_START_METHOD=spawn); the ranks run
`grl_conformance.checks.distributed_worker.run_rank` and rank 0 writes its verdict, an `Outcome`
(`Outcome.to_dict`), which the cell ends with.
The parent only launches, waits with a deadline, and cleans up: every rank runs in its own
process group (setsid), which is killed on timeout, failure and success alike, and the cell
verifies that no process of those groups survives.

GRL_DIST_TIMEOUT (seconds, default 120) bounds one cell; a hung collective becomes `error`
with "timeout". GRL_DDP_COMPILE_BACKEND (default aot_eager) picks the `ddp.compiled` backend.
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from multiprocessing.connection import wait

from grl_conformance.checks import check
from grl_conformance.core import compat
from grl_conformance.core.outcome import Errored, Outcome, Skipped
from grl_conformance.core.procs import dump_stacks, end_children, new_mark, read_text, start_method

CONCERN = "distributed"  # the advice table's column for this area's checks (core/check.py)

WORLD_SIZE = 2
# pids of the ranks of the last launch in this process (self-tests check they are gone)
LAST_SPAWN: dict = {"pids": [], "survivors": []}


# Ranks fork from the session's one forkserver (harness/core/procs.py), about 3x cheaper per cell
# than spawn on 2 busy cores (docs/distributed.md); GRL_DIST_START_METHOD=spawn gives spawn. They
# live the row child's life cycle (core/procs.py: enter_child, dump_stacks, end_children).


DONE_POLL_S = 0.2  # how often the launcher looks for ranks that finished their work


def launch(check_id: str, impl) -> Outcome:
    """Run the ranks; return rank 0's verdict (an `Outcome` of any status) or raise Errored
    (timeout, crash, traceback)."""
    import json

    if not impl.ref:
        raise Errored("implementation has no ref: a child process cannot rebuild it")
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        raise Skipped("torch.distributed is not available in this build")
    from grl_conformance.checks import distributed_worker as worker

    opts = worker.options()
    opts["mark"] = mark = new_mark("ranks")  # carried by whatever a rank's code starts
    opts["owner"] = os.getpid()  # the ranks end when this process is gone
    limit = opts["timeout_s"]
    with tempfile.TemporaryDirectory(prefix="grl-dist-") as tmp:
        ctx = mp.start_processes(worker.spawn_entry,
                                 args=(check_id, impl.ref, WORLD_SIZE, f"file://{tmp}/init", tmp, opts),
                                 nprocs=WORLD_SIZE, join=False, start_method=start_method())
        procs = ctx.processes
        pids = [p.pid for p in procs]
        LAST_SPAWN["pids"], LAST_SPAWN["survivors"] = pids, []
        first_bad = None
        timed_out = False

        def done(r: int) -> bool:  # its work and verdict are written (worker.spawn_entry)
            return os.path.exists(os.path.join(tmp, f"rank{r}.{worker.DONE}"))

        try:
            deadline = time.monotonic() + limit
            pending = {p.sentinel: r for r, p in enumerate(procs)}
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for sentinel in wait(list(pending), timeout=min(left, DONE_POLL_S)):
                    rank = pending.pop(sentinel)
                    procs[rank].join()
                    if procs[rank].exitcode != 0 and first_bad is None and not done(rank):
                        first_bad = rank
                if first_bad is not None:
                    break
                # A rank that wrote its verdict is not waited for: what is left is torch's own
                # teardown, which can hang (torch 2.6, gloo); the kill below ends it.
                pending = {s: r for s, r in pending.items() if not done(r)}
            if timed_out:
                live = [(r, p) for r, p in enumerate(procs) if p.exitcode is None]
                dump_stacks([p.pid for _, p in live],
                            lambda: all(read_text(os.path.join(tmp, f"rank{r}.stack")) for r, _ in live),
                            wait_s=2.0)
        finally:
            LAST_SPAWN["survivors"] = survivors = end_children(procs, mark)
            torch_errors = {}  # torch's own record of a rank's exception: read, then removed
            for r, path in enumerate(ctx.error_files):
                if path and os.path.exists(path):
                    torch_errors[r] = _last_line_of_torch_error(path)
                    os.unlink(path)
        if survivors:
            raise Errored(f"processes {survivors} survived the kill of the rank process groups")
        errors = {r: read_text(os.path.join(tmp, f"rank{r}.err")) or torch_errors.get(r, "")
                  for r in range(WORLD_SIZE)}
        if timed_out:
            stuck = [r for r, p in enumerate(procs) if p.exitcode in (-signal.SIGKILL, None)]
            where = [f"rank {r} at {w}" for r in stuck
                     if (w := worker.where_stuck(read_text(os.path.join(tmp, f"rank{r}.stack"))))]
            said = "; ".join(f"rank {r}: {e}" for r, e in errors.items() if e)
            raise Errored(f"timeout after {limit:g}s (GRL_DIST_TIMEOUT): rank(s) {stuck} still "
                          f"running, killed" + (f"; {'; '.join(where)}" if where else "")
                          + (f"; {said}" if said else ""), summary="timeout")
        if first_bad is not None:
            # The first error written is the cause; a peer's "connection closed" comes after.
            written = {r: os.stat(os.path.join(tmp, f"rank{r}.err")).st_mtime_ns
                       for r, e in errors.items() if e}
            if written:
                first_bad = min(written, key=written.get)
            primary = errors.get(first_bad) or f"exit code {procs[first_bad].exitcode}"
            others = [f"rank {r}: {e}" for r, e in errors.items() if e and r != first_bad]
            raise Errored(f"rank {first_bad} failed: {primary}"
                          + (f" (then {others[0]})" if others else ""), summary=f"rank {first_bad} raised")
        verdict = read_text(os.path.join(tmp, "verdict.json"))
        if not verdict:
            raise Errored("ranks exited cleanly but rank 0 wrote no verdict")
        return Outcome.from_dict(json.loads(verdict))


def _last_line_of_torch_error(path: str) -> str:
    """torch.multiprocessing pickles a failed rank's traceback text into its error file."""
    import pickle

    try:
        with open(path, "rb") as fh:
            text = pickle.load(fh)  # written by torch's own spawn wrapper in our child
        return str(text).strip().splitlines()[-1] if str(text).strip() else ""
    except Exception:  # noqa: BLE001 - unreadable: the rank's own .err file speaks instead
        return ""


def _fsdp_available() -> None:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as exc:
        raise Skipped(f"FSDP2 fully_shard not importable: {exc}") from None
    import torch

    from grl_conformance.checks import distributed_worker as worker

    want = worker.options()["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    compat.fsdp2_on(want)


@check("ddp.eager", own_processes=True)
def ddp_eager(impl) -> Outcome:
    """Under DDP every rank must train with the alpha it was given and match one process."""
    return launch("ddp.eager", impl).ended()


@check("ddp.compiled", own_processes=True)
def ddp_compiled(impl) -> Outcome:
    """torch.compile around a DDP module (DDPOptimizer splits the graph) must keep the reversal."""
    return launch("ddp.compiled", impl).ended()


@check("fsdp", own_processes=True)
def fsdp(impl) -> Outcome:
    """FSDP2 (fully_shard) shards the GRL's neighbours; the reversed gradient must survive it."""
    _fsdp_available()
    return launch("fsdp", impl).ended()


# --- contexts real training adds: tensor parallelism (harness/checks/dtensor_rank.py) ---------------

def _dtensor_available() -> None:
    try:
        from torch.distributed.tensor import distribute_tensor  # noqa: F401
    except ImportError as exc:
        raise Skipped(f"torch.distributed.tensor (DTensor) not importable: {exc}") from None


@check("dtensor", own_processes=True)
def dtensor(impl) -> Outcome:
    """On DTensor activations (Shard and Replicate on a 2-rank mesh) the GRL is the identity and reverses."""
    _dtensor_available()
    return launch("dtensor", impl).ended()
