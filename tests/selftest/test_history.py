"""The torch-history page (results/history.py): ranges, changes between releases, the CLI."""
from __future__ import annotations

import json

import pytest

from grl_conformance import cli
from grl_conformance.results import history


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
