"""Every non-pass cell carries the command that reruns it alone; the command really does."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from grl_conformance import checks as catalogue
from grl_conformance.core.registry import resolve
from grl_conformance.plugin.verdict import repro_command
from grl_conformance.results import report

ROOT = Path(__file__).resolve().parents[2]


def test_repro_names_a_builtin_row_by_name_and_any_other_by_its_ref():
    check = catalogue.get("memory.saved")
    builtin = resolve("grl_conformance.impls.naive_function:IMPL")
    assert repro_command(builtin, check) == (
        "grl-harness run naive_function --area eager -n 0 -- -k naive_function-memory.saved")
    external = resolve("tests.selftest.grls:BufferAlphaLayer")
    assert repro_command(external, check).startswith("grl-harness run tests.selftest.grls:BufferAlphaLayer ")


def test_the_markdown_footnote_carries_the_rerun_line():
    cell = {"impl": "a", "check": "memory.saved", "status": "fail", "detail": "saves 64 KiB",
            "repro": "grl-harness run a --area eager -n 0 -- -k a-memory.saved"}
    doc = report.build({"torch": "2.13.0", "python": "3", "device": "cpu", "created": "now"},
                       [{"name": "a", "kind": "function", "origin": "x"}], ["memory.saved"], [cell], 1.0)
    assert "rerun: `grl-harness run a --area eager -n 0 -- -k a-memory.saved`" in report.render_markdown(doc)


def test_the_command_reruns_that_cell_alone(tmp_path):
    tool = shutil.which("grl-harness") or str(Path(sys.executable).parent / "grl-harness")
    command = repro_command(resolve("grl_conformance.impls.naive_function:IMPL"),
                            catalogue.get("memory.saved")).split()
    command[0] = tool
    command[command.index("--"):command.index("--")] = ["--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    cells = json.loads((tmp_path / "out" / "latest.json").read_text())["cells"]
    assert [(c["impl"], c["check"], c["status"]) for c in cells] == [
        ("naive_function", "memory.saved", "fail")]
    assert cells[0]["repro"].endswith("-k naive_function-memory.saved")
