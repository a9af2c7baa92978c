"""The distributed checks' launcher: timeouts, tracebacks, no orphans, and the verdict logic.

The spawning tests cost a few seconds each (two processes importing torch); the verdict tests
run `judge` on synthetic gradients and need no process group.
"""
from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from grl_conformance import checks as catalogue
from grl_conformance.checks import distributed
from grl_conformance.checks import distributed_worker as worker
from grl_conformance.core import procs
from grl_conformance.core.outcome import Failed
from grl_conformance.core.registry import resolve
from grl_conformance.core.runner import run_check
from tests.selftest.mutation import by_name


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _assert_nothing_left() -> None:
    pids = distributed.LAST_SPAWN["pids"]
    assert len(pids) == distributed.WORLD_SIZE, "the check did not record its ranks"
    assert not [p for p in pids if _alive(p)], f"ranks still alive: {pids}"
    assert not procs.group_members(pids), "a process of the ranks' groups survived"
    # Under `make test` the matrix's rows share this worker: their children (the sandbox's,
    # named "grl-row ...") live until the session ends; anything else is the launch's.
    left = [c for c in multiprocessing.active_children() if not c.name.startswith("grl-row ")]
    assert not left, left


def test_mutant_refs_resolve_in_a_child_process():
    impl = resolve("tests.selftest.mutation:dist_rank_local_alpha")
    assert impl.name == "dist_rank_local_alpha" and impl.api.layer(alpha=0.5) is not None
    with pytest.raises(Exception, match="no attribute .no_such_mutant"):
        resolve("tests.selftest.mutation:no_such_mutant").api  # noqa: B018 - loading raises


def test_hanging_rank_times_out_and_leaves_no_process(monkeypatch):
    monkeypatch.setenv("GRL_DIST_TIMEOUT", "15")
    outcome = run_check(by_name("dist_hang_rank1"), catalogue.get("ddp.eager"))
    assert outcome.status == "error" and "timeout" in outcome.detail, outcome
    # where each stuck rank was, from its faulthandler dump: rank 1 inside the GRL's forward
    assert "rank 1 at mutants_distributed.py" in outcome.detail, outcome.detail
    assert outcome.duration_s < 60, outcome.duration_s
    _assert_nothing_left()


def test_a_hang_in_torchs_teardown_after_the_verdict_is_not_charged_to_the_row(monkeypatch):
    """torch 2.6/2.7 (gloo) could hang in destroy_process_group after a rank's work was done:
    the cell is judged on the verdict, without waiting out the timeout, and nothing is left."""
    from grl_conformance.core.registry import Impl

    monkeypatch.setenv("GRL_DIST_TIMEOUT", "30")
    ref = "tests.selftest.teardown_hang:GRL"  # imported in the ranks only: it patches torch there
    impl = Impl(name="teardown_hang", kind="function", load=lambda: resolve(ref).api, ref=ref)
    outcome = run_check(impl, catalogue.get("ddp.eager"))
    assert outcome.status == "pass", outcome
    assert outcome.duration_s < 25, outcome.duration_s
    _assert_nothing_left()


def test_raising_rank_reports_its_traceback(monkeypatch):
    monkeypatch.setenv("GRL_DIST_TIMEOUT", "60")
    outcome = run_check(by_name("dist_raise_rank1"), catalogue.get("ddp.eager"))
    assert outcome.status == "error", outcome
    assert "rank 1 failed" in outcome.detail and "deliberate failure on rank 1" in outcome.detail
    assert "mutants_distributed.py" in outcome.detail, "the child's last frames belong in the detail"
    _assert_nothing_left()


def test_buffer_alpha_follows_rank0_under_ddp():
    # a correct GRL with alpha in a 0-d buffer: DDP's buffer broadcast carries a rank-0-only
    # set_alpha to every rank
    impl = resolve("tests.selftest.grls:BufferAlphaLayer")
    outcome = run_check(impl, catalogue.get("ddp.eager"))
    assert outcome.status == "pass", outcome
    assert outcome.summary == "alpha synced", outcome
    _assert_nothing_left()


# --- the verdict on synthetic gradients ------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    worker.WORLD[0] = 2
    return worker.reference_grads(torch.device("cpu"), 2)


def _ranks(reference, which: str, world: int = 2):
    steps = [ref["synced"] for ref in reference[:-1]] + [reference[-1][which]]
    return [[{n: g.clone() for n, g in s.items()} for s in steps] for _ in range(world)]


def _failed(ranks, reference) -> Failed:
    with pytest.raises(Failed) as failed:
        worker.verdict("ddp.eager", ranks, reference, "")
    return failed.value


def test_verdict_passes_synced_and_per_rank(reference):
    synced = worker.verdict("ddp.eager", _ranks(reference, "synced"), reference, "")
    local = worker.verdict("ddp.eager", _ranks(reference, "per_rank"), reference, "")
    assert (synced.status, synced.summary) == ("pass", "alpha synced")
    assert (local.status, local.summary) == ("pass", "alpha per rank")


def test_verdict_fails_a_wrong_alpha_step(reference):
    ranks = _ranks(reference, "synced")
    for r in ranks:  # step 1: the trunk gradient 0.1 % off, far outside the tolerance
        r[1]["trunk.weight"] = r[1]["trunk.weight"] * 1.001
    failed = _failed(ranks, reference)
    assert "step 1" in failed.detail and failed.summary == "wrong grad step 1", failed.detail


def test_verdict_fails_ranks_that_disagree(reference):
    ranks = _ranks(reference, "synced")
    ranks[1][0]["task.bias"] = ranks[1][0]["task.bias"].nextafter(torch.tensor(9.0))
    assert _failed(ranks, reference).summary == "ranks disagree"


def test_verdict_fails_a_probe_step_matching_neither(reference):
    ranks = _ranks(reference, "synced")
    for r in ranks:
        r[-1]["trunk.bias"] = -r[-1]["trunk.bias"]
    assert "rank-0" in _failed(ranks, reference).summary


def test_the_verdict_crosses_the_process_boundary_as_the_same_record(reference):
    """What rank 0 writes (`Outcome.to_dict`, JSON) is what the launcher ends the cell with."""
    import json

    from grl_conformance.core.outcome import Outcome

    passing = worker.verdict("ddp.eager", _ranks(reference, "synced"), reference, "")
    assert Outcome.from_dict(json.loads(json.dumps(passing.to_dict()))).ended() == passing
    ranks = _ranks(reference, "synced")
    for r in ranks:
        r[1]["trunk.weight"] = r[1]["trunk.weight"] * 1.001
    failing = Outcome.of(_failed(ranks, reference))
    back = Outcome.from_dict(json.loads(json.dumps(failing.to_dict())))
    assert back == failing
    with pytest.raises(Failed) as raised:
        back.ended()
    assert (raised.value.detail, raised.value.summary) == (failing.detail, failing.summary)


def test_reference_candidates_differ_only_in_the_probe_step(reference):
    for step in reference[:-1]:
        assert all(torch.equal(step["synced"][n], step["per_rank"][n]) for n in step["synced"])
    last = reference[-1]
    assert not all(torch.allclose(last["synced"][n], last["per_rank"][n]) for n in last["synced"])


def test_torchrun_entry_refuses_without_torchrun(monkeypatch, capsys):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SystemExit):
        worker.main(["ddp.eager", "grl_conformance.impls.naive_function:IMPL"])
    assert "torchrun" in capsys.readouterr().err


def test_no_process_outlives_the_session(tmp_path):
    """A whole session in a subprocess: once it exits, neither ranks nor forkserver remain."""
    import subprocess
    import sys

    script = tmp_path / "session.py"
    script.write_text(
        "from multiprocessing import forkserver\n"
        "from grl_conformance import checks\n"
        "from grl_conformance.checks import distributed\n"
        "from grl_conformance.core.registry import resolve\n"
        "from grl_conformance.core.runner import run_check\n"
        "if __name__ == '__main__':\n"
        "    o = run_check(resolve('grl_conformance.impls.naive_function:IMPL'), checks.get('ddp.eager'))\n"
        "    print(o.status, forkserver._forkserver._forkserver_pid, *distributed.LAST_SPAWN['pids'])\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    status, *pids = done.stdout.split()[-(distributed.WORLD_SIZE + 2):]
    assert status == "pass", done.stdout + done.stderr
    left = [int(p) for p in pids if p != "None" and _alive(int(p))]
    assert not left, f"still running after the session exited: {left}"
