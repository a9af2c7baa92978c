"""Controls: every column runs first on a GRL known to be right; a broken column charges no row.

- on the torch the self-tests run on, every column's control passes (or skips for what the
  machine lacks: CUDA, an optional extra): a harness bug on our own torch stays loud here;
- the verdict logic (`controls.judged`) and the version probes of core/compat.py;
- a planted harness gap (tests/selftest/plant_gap.py removes dynamo's recompile-limit switches
  in the sandbox's processes, as a future torch might): with plain pytest and with `-n 2`, every
  row's cell in the compile columns is `skip (not judged)` with the control's reason, the other
  columns are judged as without the gap, the header names the unjudged columns, and the run exits 0.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core import compat, controls
from grl_conformance.core.outcome import (
    NOT_INSTALLED,
    NOT_JUDGED,
    Outcome,
    Skipped,
    is_not_judged,
)
from grl_conformance.core.registry import resolve
from grl_conformance.core.runner import run_check

ROOT = Path(__file__).resolve().parents[2]


def _lacks(outcome: Outcome) -> bool:
    """A skip for what this machine lacks, which every row shares (no CUDA, an extra)."""
    return outcome.status == "skip" and (outcome.summary == NOT_INSTALLED
                                         or "CUDA" in outcome.detail)


@pytest.mark.parametrize("check", catalogue.all_checks(), ids=lambda c: c.id)
def test_every_control_passes_on_this_torch(check):
    outcome = run_check(resolve(controls.control_ref(check.control)), check)
    if _lacks(outcome):
        pytest.skip(f"{check.id}: {outcome.detail}")
    assert outcome.status == "pass", (f"{check.id}: its control ({check.control}) is "
                                      f"{outcome.status} on this torch: {outcome.detail}")


def test_every_control_names_a_loadable_grl():
    for name in sorted({c.control for c in catalogue.all_checks()}):
        assert resolve(controls.control_ref(name)).api.layer is not None, name


ROW_FAIL = Outcome("fail", "reversal lost", 0.5, "wrong grad")


def test_a_passing_control_leaves_the_row_alone():
    assert controls.judged(ROW_FAIL, Outcome("pass", "ok"), "reference") == ROW_FAIL


@pytest.mark.parametrize("status", ["fail", "error", "n/a"])
def test_a_control_that_does_not_pass_leaves_the_column_unjudged(status):
    cell = controls.judged(ROW_FAIL, Outcome(status, "AttributeError: gone"), "witness")
    assert (cell.status, cell.summary) == ("skip", NOT_JUDGED)
    assert cell.detail.startswith("not judged: the control (witness)") and "AttributeError: gone" in cell.detail
    assert is_not_judged({"status": cell.status, "summary": cell.summary})


def test_a_skipped_control_keeps_the_rows_own_skip_but_never_a_pass():
    row_skip = Outcome("skip", "no CUDA device")
    assert controls.judged(row_skip, Outcome("skip", "no CUDA device"), "reference") == row_skip
    cell = controls.judged(Outcome("pass", "ok"), Outcome("skip", "no CUDA"), "reference")
    assert (cell.status, cell.summary) == ("skip", NOT_JUDGED)


def test_compat_picks_whichever_recompile_switch_this_torch_has(monkeypatch):
    import torch._dynamo.config as config

    names = [n for n in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit") if hasattr(config, n)]
    assert names, "this torch has neither switch"
    assert compat.strict_dynamo_config() == {names[0]: True, "suppress_errors": False}
    for name in names:
        monkeypatch.delitem(config._config, name)
    with pytest.raises(compat.HarnessGap, match="recompile-limit"):
        compat.strict_dynamo_config()


def test_compat_turns_the_aot_autograd_cache_off_and_back(monkeypatch):
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "enable_autograd_cache"):
        before = functorch_config.enable_autograd_cache
        with compat.no_aot_autograd_cache():
            assert functorch_config.enable_autograd_cache is False
        assert functorch_config.enable_autograd_cache == before
    monkeypatch.delattr(functorch_config, "enable_autograd_cache", raising=False)
    with compat.no_aot_autograd_cache():  # a torch without the cache: nothing to turn off
        pass


def test_compat_says_which_torch_fsdp2_on_cpu_needs(monkeypatch):
    import torch

    compat.fsdp2_on("cuda")  # never a skip for CUDA
    if hasattr(torch.cpu.Stream, "record_event"):
        compat.fsdp2_on("cpu")
        monkeypatch.delattr(torch.cpu.Stream, "record_event")
    with pytest.raises(Skipped, match=r"needs torch >= 2\.7"):
        compat.fsdp2_on("cpu")


ROWS = "naive_function,witness"
CHECKS = "forward.identity or compile.eager or compile.aot_eager"


def _planted_run(tmp_path: Path, workers: int) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / f"planted-{workers}"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.selftest.plant_gap",
           "harness/conformance/test_eager.py", "harness/conformance/test_compile.py",
           "-k", CHECKS, "--grl-no-builtin", "--grl-only", ROWS, "--grl-report-dir", str(out),
           "--grl-expectations", str(tmp_path / "no-pins")]
    cmd += ["-n", str(workers)] if workers else ["-p", "no:xdist"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CI": "true"})
    report = out / "latest.json"
    return done, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.parametrize("workers", [0, 2], ids=["plain", "xdist-2"])
def test_a_planted_harness_gap_charges_no_row(tmp_path, workers):
    done, doc = _planted_run(tmp_path, workers)
    log = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0 and doc, log
    cells = {(c["impl"], c["check"]): c for c in doc["cells"]}
    for row in ROWS.split(","):
        assert cells[(row, "forward.identity")]["status"] == "pass", cells[(row, "forward.identity")]
        for column in ("compile.eager", "compile.aot_eager"):
            cell = cells[(row, column)]
            assert (cell["status"], cell.get("summary")) == ("skip", NOT_JUDGED), cell
            assert "control (reference) is error" in cell["detail"] and "recompile-limit" in cell["detail"]
    assert doc["controls"]["compile.eager"]["status"] == "error"
    assert doc["controls"]["forward.identity"]["status"] == "pass"
    assert set(doc["controls"]) == {"forward.identity", "compile.eager", "compile.aot_eager"}
    assert "2 NOT JUDGED here" in done.stdout and "compile.eager, compile.aot_eager" in done.stdout
    md = next(out for out in (tmp_path / f"planted-{workers}").glob("compat-*.md"))
    assert "## Columns not judged here" in md.read_text()


def test_a_graph_break_carries_dynamos_id_and_hint():
    import re

    import torch

    def f(x):
        torch._dynamo.graph_break()
        return x + 1

    torch._dynamo.reset()
    try:
        with pytest.raises(Exception) as info:  # noqa: PT011 - dynamo's exception types vary by torch
            torch.compile(f, fullgraph=True, backend="eager")(torch.ones(2))
    finally:
        torch._dynamo.reset()
    text = compat.graph_break_id(info.value)
    assert re.match(r"graph break GB\d{4} \(", text), text
