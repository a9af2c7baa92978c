"""Hostile rows cannot hang, kill or falsify a run: plain pytest and `-n 2` alike.

Each run goes through a subprocess pytest (the way a user runs the matrix) with the hostile
rows of tests/selftest/hostile.py beside two reference rows, a short --grl-timeout and a few
checks. The run must exit 0, write its report, give each hostile row its red cells with a
useful detail, keep the reference rows' cells exactly as a run without the hostile rows has
them, and leave no process behind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ["SEGFAULT", "EXIT", "HANG", "GRAD_OFF", "DEFAULT_DTYPE", "THREAD", "SPAWNER", "CHATTY"]
CHECKS = "forward.identity or backward.reversal or alpha.update or compile.eager"
REFERENCE_ROWS = "naive_function,hook"


def _run(tmp_path: Path, hostile: bool, workers: int) -> tuple[subprocess.CompletedProcess, dict, str]:
    mark = uuid.uuid4().hex
    out = tmp_path / ("hostile" if hostile else "clean")
    temp = tmp_path / "tmp"  # the run's temp directory: it must be empty afterwards
    temp.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "harness/conformance/test_eager.py",
           "harness/conformance/test_compile.py", "-k", CHECKS, "--grl-timeout", "6",
           "--grl-report-dir", str(out), "--grl-no-builtin", "--grl-only", REFERENCE_ROWS,
           "--grl-keep-logs", str(tmp_path / "logs")]
    cmd += ["-n", str(workers)] if workers else ["-p", "no:xdist"]
    if hostile:
        for name in HOSTILE:
            cmd += ["--grl-impl", f"tests.selftest.hostile:{name}"]
    env = {**os.environ, "GRL_SELFTEST_MARK": mark, "CI": "true", "TMPDIR": str(temp)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = out / "latest.json"
    doc = json.loads(report.read_text()) if report.exists() else {}
    return done, doc, mark


def _left_behind(mark: str, grace_s: float = 5.0) -> list[int]:
    """Processes still carrying this run's environment marker (children inherit it), after a
    moment's grace for the forkserver and resource tracker, which exit on their pipe's EOF."""
    import time

    deadline = time.monotonic() + grace_s
    while (found := _marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def _marked(mark: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if f"GRL_SELFTEST_MARK={mark}".encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def clean_cells(tmp_path_factory):
    done, doc, _ = _run(tmp_path_factory.mktemp("clean"), hostile=False, workers=0)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return {(c["impl"], c["check"]): c["status"] for c in doc["cells"]}


def _cells(doc: dict) -> dict:
    return {(c["impl"], c["check"]): c for c in doc["cells"]}


@pytest.mark.parametrize("workers", [0, 2], ids=["plain", "xdist-2"])
def test_hostile_rows_become_red_cells_and_change_nothing_else(tmp_path, clean_cells, workers):
    done, doc, mark = _run(tmp_path, hostile=True, workers=workers)
    log = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, log
    assert doc, "no report written\n" + log
    cells = _cells(doc)
    # The reference rows beside the hostile ones keep exactly the cells they have alone.
    assert {k: cells[k]["status"] for k in clean_cells} == clean_cells, log
    want = {
        ("hostile_segfault", "backward.reversal"): ("error", "killed by SIGSEGV"),
        ("hostile_exit", "forward.identity"): ("error", "exit code 7"),
        ("hostile_hang", "backward.reversal"): ("error", "timed out after 6 s"),
        ("hostile_grad_off", "forward.identity"): ("error", "grad mode True -> False"),
        ("hostile_dtype", "forward.identity"): ("error", "default dtype torch.float32 -> torch.float64"),
        ("hostile_thread", "forward.identity"): ("error", "non-daemon thread(s) still running (grl-forever"),
    }
    for key, (status, words) in want.items():
        assert cells[key]["status"] == status and words in cells[key]["detail"], (key, cells[key])
    assert "hostile.py" in cells[("hostile_segfault", "backward.reversal")]["detail"]
    assert "stuck at hostile.py" in cells[("hostile_hang", "backward.reversal")]["detail"]
    # A fresh child takes the next cell after a kill: the hang row's forward still passes.
    assert cells[("hostile_hang", "forward.identity")]["status"] == "pass"
    assert not _left_behind(mark), "processes of the run outlived it"
    # A correct row that starts helpers in sessions of their own, or prints a megabyte per
    # forward, is a correct row: its cells pass, its helpers end with the run (above), its
    # output is kept bounded, and the run leaves nothing in the temp directory.
    for row in ("hostile_spawner", "hostile_chatty"):
        assert cells[(row, "backward.reversal")]["status"] == "pass", cells[(row, "backward.reversal")]
    # (pytest-xdist's own base temp directory, pytest-of-<user>, is pytest's, with its own
    # retention; nothing else may be there)
    left = [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("pytest-of-")]
    assert left == []
    logs = {p.name: p.stat().st_size for p in (tmp_path / "logs").iterdir()}
    assert any("hostile_chatty" in name for name in logs), logs
    assert max(logs.values()) <= 256 * 1024, logs
    assert "row logs" in done.stdout and str(tmp_path / "logs") in done.stdout


def test_a_long_tmpdir_does_not_break_the_rows(tmp_path):
    """A TMPDIR of 80+ characters (a CI workspace, a nested tmp_path) would put the forkserver's
    socket past the Unix path limit (`AF_UNIX path too long` in every cell); it is left empty."""
    temp = tmp_path / ("t" * 80)
    temp.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "harness/conformance/test_eager.py", "-k", "forward.identity", "--grl-only",
           "witness", "--grl-no-report"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "CI": "true", "TMPDIR": str(temp)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
    assert not [p.name for p in temp.iterdir() if not p.name.startswith("pytest-of-")]


def test_under_xdist_a_rows_cells_stay_on_one_worker(tmp_path):
    """One child per row for the session, not one per worker: the scheduling keeps a row's
    cells together (xdist 3.8's `loadgroup` tags did not survive pytest 9.2, and every worker
    started every row)."""
    from grl_conformance.plugin.cell import cell_key_from_nodeid

    record = tmp_path / "workers.txt"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
           "-p", "tests.selftest.worker_recorder", "harness/conformance/test_eager.py",
           "harness/conformance/test_compile.py", "-k", "alpha.update or graph.shared_trunk or compile.eager",
           "--grl-no-builtin", "--grl-only", "naive_function,hook,detach,witness", "--grl-no-report"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "GRL_SELFTEST_WORKERS": str(record)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workers: dict[str, set[str]] = {}
    for line in record.read_text().splitlines():
        worker, nodeid = line.split(" ", 1)
        workers.setdefault(cell_key_from_nodeid(nodeid)[0], set()).add(worker)
    assert sorted(workers) == ["detach", "hook", "naive_function", "witness"]
    assert all(len(w) == 1 for w in workers.values()), workers
    assert len(set().union(*workers.values())) == 2, "both workers should get rows"


def test_a_warm_up_that_breaks_forked_backwards_is_dropped_and_named(tmp_path):
    """The release-day break (core/procs.py, WARMUPS): after the server's full warm-up, a forked
    child's backward raises. The proof catches it, the server starts again with the next warm-up,
    the cells are judged as usual, and the report's header says which warm-up ran and why."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "-p", "tests.selftest.plant_fork_break", "harness/conformance/test_eager.py",
           "-k", "backward.reversal or alpha.update", "--grl-only", "witness",
           "--grl-report-dir", str(out)]
    env = {**os.environ, "GRL_PLANT_FORK_BREAK": "1"}
    env.pop("GRL_WARMUP", None)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    doc = json.loads((out / "latest.json").read_text())
    assert {(c["check"], c["status"]) for c in doc["cells"]} == {
        ("backward.reversal", "pass"), ("alpha.update", "pass")}, doc["cells"]
    assert doc["sandbox"].startswith("sandbox warm-up: a compiled forward under no_grad; "
                                     "full dropped: after a compiled forward and backward"), doc
    assert "planted by tests/selftest/plant_fork_break.py" in doc["sandbox"]
    assert "sandbox warm-up: a compiled forward under no_grad" in (out / next(
        p.name for p in out.iterdir() if p.suffix == ".md")).read_text()
    assert "sandbox warm-up: a compiled forward under no_grad" in done.stdout


def test_the_proof_is_what_catches_the_planted_break():
    """The mutant for the test above: with the proof switched off, the server keeps its full
    warm-up on the planted torch, and a forked child's backward then raises: the proof, not
    luck, is what kept the break away from the rows."""
    code = "\n".join([
        "from grl_conformance.core import procs",
        "from grl_conformance.isolation import server",
        "real = procs.prove_backward",
        "procs.PRELOAD.append('tests.selftest.plant_fork_break')",
        "server.register()",
        "procs.prove_backward = lambda ctx: (True, 'not proved')",
        "ctx = procs.ensure_forkserver()",
        "print('LEVEL', procs.WARMUP['level'])",
        "print('PROOF', real(ctx))",
    ])
    env = {**os.environ, "GRL_PLANT_FORK_BREAK": "1"}
    env.pop("GRL_WARMUP", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert "LEVEL full" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PROOF (False, " in done.stdout and "planted by tests/selftest" in done.stdout
