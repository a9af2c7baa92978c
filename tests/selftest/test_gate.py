"""The torch-upgrade gate: the comparison, the diff CLI, and one end-to-end run with a planted
regression (a baseline claiming a cell passed that a mutant now fails)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grl_conformance import cli
from grl_conformance.results import compare as gate

ROOT = Path(__file__).resolve().parents[2]


def cell(impl, status, check="forward.identity", detail=""):
    return {"impl": impl, "check": check, "status": status, "detail": detail or f"{impl} {status}"}


def doc(torch, cells):
    return {"schema": 1, "torch": torch, "python": "3", "device": "cpu (test)", "created": "now",
            "impls": [], "checks": sorted({c["check"] for c in cells}), "cells": cells}


# --- the comparison, cell by cell ---------------------------------------------------------

@pytest.mark.parametrize(("was", "now", "verdict"), [
    ("pass", "pass", gate.SAME),
    ("pass", "fail", gate.REGRESSION),
    ("pass", "error", gate.REGRESSION),
    ("pass", "skip", gate.REGRESSION),      # a pass that is no longer a pass: coverage lost
    ("pass", "xfail", gate.REGRESSION),
    ("pass", "n/a", gate.REGRESSION),
    ("error", "fail", gate.REGRESSION),     # a new fail
    ("skip", "fail", gate.REGRESSION),
    ("xfail", "fail", gate.REGRESSION),
    ("fail", "fail", gate.KNOWN),
    ("error", "error", gate.KNOWN),
    ("fail", "pass", gate.IMPROVEMENT),
    ("error", "pass", gate.IMPROVEMENT),
    ("skip", "pass", gate.IMPROVEMENT),
    ("fail", "error", gate.CHANGED),
    ("error", "skip", gate.CHANGED),
    ("skip", "skip", gate.SAME),
])
def test_classify(was, now, verdict):
    assert gate.classify(cell("a", was), cell("a", now)) == verdict


@pytest.mark.parametrize("was", ["pass", "fail", "error", "skip"])
def test_a_column_its_control_could_not_judge_is_never_a_regression(was):
    now = {**cell("a", "skip"), "summary": "not judged"}
    assert gate.classify(cell("a", was), now) == gate.UNJUDGED
    assert gate.classify(now, now) == gate.SAME  # not judged in the baseline either


def test_compare_lists_new_and_removed():
    base = [cell("a", "pass"), cell("gone", "pass")]
    now = [cell("a", "pass"), cell("fresh", "fail"), cell("a", "pass", check="other.check")]
    result = gate.compare(base, now)
    assert [k for k, _, _ in result.rows[gate.NEW]] == [("a", "other.check")]
    assert [k for k, _, _ in result.rows[gate.REMOVED]] == [("gone", "forward.identity")]
    # a wrong result the baseline never accepted (a renamed row, a new column) is a regression
    assert [k for k, _, _ in result.regressions] == [("fresh", "forward.identity")]


def test_render_lists_every_regression_with_its_detail():
    result = gate.compare([cell("a", "pass"), cell("b", "pass"), cell("c", "fail")],
                          [cell("a", "fail", detail="grad is +1"), cell("b", "error", detail="boom"),
                           cell("c", "pass")])
    text = gate.render(result, "torch 2.13.0", "torch 2.14.1")
    assert "REGRESSION (2)" in text and "IMPROVEMENT (1)" in text
    assert "grad is +1" in text and "boom" in text
    assert text.splitlines()[-1] == "torch 2.13.0 -> torch 2.14.1: 2 regression, 1 improvement"


def test_pick_baseline(tmp_path):
    assert gate.pick_baseline(tmp_path, "2.14.1") is None
    for v in ("2.9", "2.12", "2.13", "2.15"):
        (tmp_path / f"torch-{v}.json").write_text("{}")
    (tmp_path / "torch-notes.json").write_text("{}")
    assert gate.pick_baseline(tmp_path, "2.14.1+cu130").name == "torch-2.13.json"  # nearest older
    assert gate.pick_baseline(tmp_path, "2.13.0+cpu").name == "torch-2.13.json"    # its own
    assert gate.pick_baseline(tmp_path, "2.10.0").name == "torch-2.9.json"         # numeric order
    assert gate.baseline_path(tmp_path, "2.14.1+cpu").name == "torch-2.14.json"


# --- the diff CLI -------------------------------------------------------------------------

def test_diff_cli(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(doc("2.13.0+cpu", [cell("a", "pass"), cell("b", "fail"),
                                                  cell("k", "error"), cell("gone", "pass")])))
    new.write_text(json.dumps(doc("2.14.1+cpu", [cell("a", "fail", detail="lost reversal"),
                                                  cell("b", "pass"), cell("k", "error"),
                                                  cell("n", "pass")])))
    assert cli.main(["diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    for text in ("REGRESSION (1)", "lost reversal", "IMPROVEMENT (1)", "NEW (1)", "REMOVED (1)",
                 "torch 2.13.0 -> torch 2.14.1: 1 regression, 1 improvement, 1 new, 1 removed, 1 known"):
        assert text in out, out
    assert "KNOWN" not in out  # listed only with --all
    assert cli.main(["diff", str(old), str(new), "--all", "--fail-on-regression"]) == 1
    assert "KNOWN (1)" in capsys.readouterr().out


def test_diff_cli_rejects_a_non_report(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 99}))
    assert cli.main(["diff", str(bad), str(bad)]) == 2
    assert "schema" in capsys.readouterr().err


# --- end to end: pytest --grl-baseline on a planted regression ----------------------------

FIX = "tests.selftest.gate_fixtures"
ROWS = ["--grl-impl", f"{FIX}:GateGood", "--grl-impl", f"{FIX}:GateMutant",
        "--grl-impl", f"{FIX}:GateNew", "--grl-impl", f"{FIX}:GateKnown"]


def run_matrix(tmp_path, baseline: dict, only: str, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "torch-2.13.json"
    path.write_text(json.dumps(baseline))
    env = {k: v for k, v in os.environ.items() if k != "GRL_IMPLS"}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "-rA",
           "harness/conformance/test_eager.py", "-k", "forward.identity", *ROWS, "--grl-only", only,
           "--grl-baseline", str(path), "--grl-no-report", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


BASELINE = doc("2.13.0+cpu", [
    cell("GateGood", "fail", detail="claimed failing"),        # now passes: improvement
    cell("GateMutant", "pass", detail="claimed passing"),      # now fails: planted regression
    cell("GateKnown", "fail", detail="output differs"),        # still fails: known (xfail)
])


def test_gate_fails_the_run_on_a_planted_regression(tmp_path):
    proc = run_matrix(tmp_path, BASELINE, "GateGood,GateMutant,GateNew,GateKnown")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "FAILED harness/conformance/test_eager.py::test_cell[GateMutant-forward.identity]" in out
    assert "REGRESSION vs torch-2.13.json" in out and "was pass, now fail" in out
    assert "output differs from input" in out  # the regressed cell's own detail is printed
    assert "XFAIL harness/conformance/test_eager.py::test_cell[GateKnown-forward.identity]" in out
    summary = out[out.index("GRL torch-upgrade gate"):]
    for text in ("REGRESSION (1)", "IMPROVEMENT (1)", "NEW (1)", "GateNew", "gate: 1 regression"):
        assert text in summary, summary


def test_gate_passes_improvements_and_new_rows(tmp_path):
    proc = run_matrix(tmp_path, BASELINE, "GateGood,GateNew,GateKnown")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "IMPROVEMENT (1)" in out and "NEW (1)" in out
    assert "gate: 0 regressions, 1/1 columns held -> ok" in out
    assert "REMOVED" not in out  # GateMutant was filtered out with --grl-only, not removed


def test_update_baseline_writes_this_runs_cells(tmp_path):
    proc = run_matrix(tmp_path, BASELINE, "GateGood,GateMutant",
                      "--grl-update-baseline", "--grl-baseline-dir", str(tmp_path / "out"))
    written = list((tmp_path / "out").glob("torch-*.json"))
    assert len(written) == 1, proc.stdout + proc.stderr
    data = json.loads(written[0].read_text())
    import torch

    assert written[0].name == f"torch-{'.'.join(torch.__version__.split('.')[:2])}.json"
    assert {(c["impl"], c["status"]) for c in data["cells"]} == {("GateGood", "pass"),
                                                                  ("GateMutant", "fail")}
    assert all("duration_s" not in c for c in data["cells"])


# --- what the gate could hold --------------------------------------------------------------

def unjudged(impl, check):
    return {**cell(impl, "skip", check), "summary": "not judged"}


def test_columns_held_sorts_judged_unjudged_and_not_run_columns():
    cells = [cell("a", "pass", "forward.identity"), cell("b", "fail", "forward.identity"),
             unjudged("a", "compile.eager"), unjudged("b", "compile.eager"),
             cell("a", "skip", "cuda.graph"), cell("b", "skip", "cuda.graph")]
    held = gate.columns_held(cells)
    assert (held.held, held.not_held, held.not_run, held.total) == (
        ("forward.identity",), ("compile.eager",), ("cuda.graph",), 3)


def test_a_column_not_judged_on_both_sides_is_not_held_and_never_ok():
    """The 2.14 -> 2.15 story: expectations written while 37 columns were unjudged, a run with
    the same 37 unjudged. Every cell is `same`, and still the gate must not say ok."""
    base = [unjudged("a", "compile.eager"), cell("a", "pass")]
    now = [unjudged("a", "compile.eager"), cell("a", "pass")]
    comparison = gate.compare(base, now)
    assert comparison.counts() == {gate.SAME: 2}
    line = gate.gate_line(comparison, gate.columns_held(now))
    assert line.startswith("gate: 0 regressions, 1/2 columns held -> NOT HELD: 1 column not "
                           "judged on this torch"), line
    assert line.endswith(": compile.eager") and not line.endswith("-> ok")


def test_gate_line_counts_held_columns_and_says_ok_only_when_all_judged_are_held():
    now = [cell("a", "pass"), cell("a", "skip", "cuda.graph")]
    line = gate.gate_line(gate.compare(now, now), gate.columns_held(now))
    assert line == "gate: 0 regressions, 1/2 columns held (1 not run here) -> ok"
    worse = [cell("a", "fail"), cell("a", "skip", "cuda.graph")]
    assert gate.gate_line(gate.compare(now, worse), gate.columns_held(worse)).endswith("-> FAILED")


def test_failed_controls_names_failed_controls_and_unjudged_columns():
    doc_ = {"controls": {"compile.eager": {"status": "error"}, "cuda.graph": {"status": "skip"},
                         "forward.identity": {"status": "pass"}},
            "cells": [unjudged("a", "export"), cell("a", "pass")]}
    assert gate.failed_controls(doc_) == ["compile.eager", "export"]


def test_expectations_record_the_harness_version():
    written = gate.baseline_doc(doc("2.15.0", [cell("a", "pass")]))
    assert written["harness"] == gate.harness_version() and written["harness"]


GAP = ["-p", "tests.selftest.plant_gap"]  # every compile column's control fails (test_controls.py)


def run_gap(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GRL_IMPLS"}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", *GAP,
           "harness/conformance/test_compile.py", "harness/conformance/test_eager.py",
           "-k", "compile.alpha_schedule or forward.identity", *ROWS, "--grl-only", "GateGood",
           "--grl-no-report", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_column_the_harness_cannot_judge_fails_the_gate_as_not_held(tmp_path):
    baseline = doc("2.13.0+cpu", [cell("GateGood", "pass"),
                                  cell("GateGood", "pass", "compile.alpha_schedule")])
    path = tmp_path / "torch-2.13.json"
    path.write_text(json.dumps(baseline))
    proc = run_gap(tmp_path, "--grl-baseline", str(path))
    out = proc.stdout
    assert proc.returncode == 6, out + proc.stderr
    line = next(ln for ln in out.splitlines() if ln.startswith("gate: "))
    assert line.startswith("gate: 0 regressions, 1/2 columns held -> NOT HELD: 1 column not "
                           "judged"), out
    assert line.endswith(": compile.alpha_schedule"), line
    assert "was made with grl-conformance (unrecorded)" in out  # the file has no version


def test_update_baseline_refuses_while_a_control_fails(tmp_path):
    proc = run_gap(tmp_path, "--grl-update-baseline", "--grl-baseline-dir", str(tmp_path / "out"))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert "expectations NOT written: the control of 1 column did not pass here " \
           "(compile.alpha_schedule)" in proc.stdout
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    forced = run_gap(tmp_path, "--grl-update-baseline", "--grl-allow-unjudged",
                     "--grl-baseline-dir", str(tmp_path / "out"))
    assert forced.returncode == 0, forced.stdout + forced.stderr
    written = json.loads(next((tmp_path / "out").glob("torch-*.json")).read_text())
    assert written["harness"] == gate.harness_version()
