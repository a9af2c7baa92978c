"""The torch-history page (results/history.py): ranges, changes between releases, the CLI, and
the README's history block, held equal to the committed reports and wall times."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grl_conformance import cli
from grl_conformance.results import advice, history

ROOT = Path(__file__).resolve().parents[2]
HISTORY = "reports/history"


def doc(torch, cells, created="2026-12-05T00:00:00"):
    return {"schema": 1, "torch": torch, "python": "3.11", "device": "cpu", "created": created,
            "duration_s": 10.0, "impls": [{"name": n, "kind": "function", "origin": "x"}
                                          for n in sorted({c["impl"] for c in cells})],
            "checks": sorted({c["check"] for c in cells}), "cells": cells,
            "areas": {"eager": sorted({c["check"] for c in cells})}}


def cell(impl, check, status, detail="", summary=""):
    return {"impl": impl, "check": check, "status": status, "detail": detail or f"{impl} {status}",
            **({"summary": summary} if summary else {})}


LABELS = ["2.6", "2.7", "2.8", "2.9"]


@pytest.mark.parametrize(("passes", "want"), [
    ([True, True, True, True], "all"),
    ([False, False, False, False], "never"),
    ([False, True, True, True], "2.7-2.9"),
    ([True, True, False, False], "2.6-2.7"),
    ([True, False, True, False], "2.6, 2.8"),
])
def test_pass_ranges(passes, want):
    assert history.pass_ranges(passes, LABELS, [True] * 4) == want


def test_changes_group_rows_by_column_and_transition():
    old = doc("2.13.0", [cell("a", "jit.script", "pass"), cell("b", "jit.script", "pass"),
                         cell("a", "export", "fail")])
    new = doc("2.14.1", [cell("a", "jit.script", "error", "scripting broke"),
                         cell("b", "jit.script", "error", "scripting broke"),
                         cell("a", "export", "pass")])
    found = history.changes(old, new)
    assert [(c["check"], c["was"], c["now"], c["rows"], c["every_row"]) for c in found] == [
        ("jit.script", "pass", "error", ["a", "b"], True),  # breakages first
        ("export", "fail", "pass", ["a"], False)]
    assert found[0]["detail"] == "scripting broke"


def test_the_page_and_the_cli(tmp_path, capsys):
    for version, status in (("2.6.0", "skip"), ("2.7.1", "pass"), ("2.14.1", "pass")):
        summary = "not judged" if status == "skip" else ""
        cells = [cell("a", "compile.eager", status, summary=summary), cell("a", "forward.identity", "pass")]
        (tmp_path / f"compat-{version}-cpu.json").write_text(json.dumps(doc(version, cells)))
    (tmp_path / "wall-times.txt").write_text("2.6.0 install_s=180 matrix_s=200\n")
    assert cli.main(["history", str(tmp_path)]) == 0
    page = capsys.readouterr().out
    assert "(2.6 to 2.14)" in page  # ordered by version, not by name
    assert "### torch 2.6 -> 2.7" in page and "### torch 2.7 -> 2.14" in page
    assert "`compile.eager`: skip -> pass for every row" in page
    assert "| 180 s" in page and "`compile.eager`" in page.split("## Changes")[0]  # not judged on 2.6
    assert "2.7-2.14" in page  # where compile.eager passes
    out = tmp_path / "README.md"
    assert cli.main(["history", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text().startswith("# GRL compatibility across torch releases")


def test_an_empty_folder_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["history", str(tmp_path)]) == 2
    assert "run `make history` first" in capsys.readouterr().err


# --- the README's history block -------------------------------------------------------------

def test_readme_history_block_equals_the_committed_reports():
    want = history.readme_block(*history.load_dir(ROOT / HISTORY), HISTORY)
    got = advice.block(ROOT / "README.md", history.README_START, history.README_END)
    assert got == want, (f"README's history block is stale: run grl-harness history {HISTORY} "
                         "--readme README.md (make readme)")


def _two_releases(tmp_path, wall_times):
    old = doc("2.6.0", [cell("a", "fsdp", "skip", summary="not judged"),
                        cell("a", "forward.identity", "pass")], created="2026-12-01T00:00:00")
    old["controls"] = {"fsdp": {"control": "reference", "status": "error", "summary": "timeout",
                                "detail": "timeout after 120s"},
                       "forward.identity": {"control": "reference", "status": "pass"}}
    old["cells"][0]["detail"] = "not judged: the control (reference) is error here"
    new = doc("2.14.1", [cell("a", "fsdp", "pass"), cell("a", "forward.identity", "pass")],
              created="2026-12-06T00:00:00")
    for d in (old, new):
        (tmp_path / f"compat-{d['torch']}-cpu.json").write_text(json.dumps(d))
    (tmp_path / "wall-times.txt").write_text(wall_times)
    return history.readme_block(*history.load_dir(tmp_path), "h")


def test_the_block_states_each_release_from_its_report_and_last_wall_time(tmp_path):
    text = _two_releases(tmp_path, "2.6.0 install_s=1 matrix_s=2\n2.14.1 install_s=60 matrix_s=120\n"
                                   "2.6.0 install_s=50 matrix_s=500\n")
    assert "2 torch releases, 2.6 to 2.14" in text and "2 columns x 1 rows" in text
    assert ("| [2.6.0](h/compat-2.6.0-cpu.md) | 2026-12-01 | 50 s | 500 s, 1 control timed out | 2 |"
            in text)  # the last line of 2.6.0, and both its runs counted
    assert "`fsdp` not judged (control error: timeout)" in text
    assert "| [2.14.1](h/compat-2.14.1-cpu.md) | 2026-12-06 | 60 s | 120 s | 1 | none | `a` |" in text
    assert "12 min (110 s installing torch, 620 s of matrix)" in text


def test_a_changed_wall_times_line_changes_the_block(tmp_path):
    """The block cannot pass while ignoring its input: another last line, other figures."""
    before = _two_releases(tmp_path, "2.6.0 install_s=50 matrix_s=500\n2.14.1 install_s=60 matrix_s=120\n")
    after = _two_releases(tmp_path, "2.6.0 install_s=50 matrix_s=500\n2.14.1 install_s=60 matrix_s=900\n")
    assert before != after
    assert "| 60 s | 900 s |" in after and "| 60 s | 120 s |" not in after
    assert "25 min (110 s installing torch, 1400 s of matrix)" in after


def test_the_cli_rewrites_the_readme_block(tmp_path, capsys):
    for name in ("compat-2.13.0-cpu.json", "compat-2.14.1-cpu.json", "wall-times.txt"):
        shutil.copy(ROOT / HISTORY / name, tmp_path / name)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{history.README_START}\nold figures\n{history.README_END}\ntail\n")
    assert cli.main(["history", str(tmp_path), "--readme", str(readme)]) == 0
    assert capsys.readouterr().out.strip() == f"{readme}: updated"  # the block, not the page
    text = readme.read_text()
    assert "old figures" not in text and text.endswith(f"{history.README_END}\ntail\n")
    assert "2 torch releases, 2.13 to 2.14" in text and "[2.13.0](compat-2.13.0-cpu.md)" in text
    assert "[wall-times.txt](wall-times.txt)" in text  # links from the README's own folder
    assert cli.main(["history", str(tmp_path), "--readme", str(readme)]) == 0
    assert capsys.readouterr().out.strip() == f"{readme}: unchanged"
    readme.write_text("no markers\n")
    assert cli.main(["history", str(tmp_path), "--readme", str(readme)]) == 2
    assert "no <!-- history:start -->" in capsys.readouterr().err
