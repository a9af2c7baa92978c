"""The README's generated blocks are the committed reports, rendered: the "Which GRL should I
use?" table, the latency figures and the upgrade example (the torch history's block: test_history)."""
from __future__ import annotations

import shutil
from pathlib import Path

from grl_conformance import cli
from grl_conformance.results import advice, latency, report
from grl_conformance.results import compare as gate

ROOT = Path(__file__).resolve().parents[2]
REPORT = "reports/compat-2.13.0-cpu.json"
SWEEP = "reports/latency-2.13.0-cpu.json"
UPGRADE = ("reports/history/compat-2.14.1-cpu.json", "reports/history/compat-2.15.0-cpu.json")
UPGRADE_DIFF = "reports/diff-2.14.1-to-2.15.0-cpu.txt"


def test_readme_table_equals_the_committed_report():
    want = advice.render(report.load(ROOT / REPORT), REPORT)
    assert advice.block(ROOT / "README.md") == want, (
        f"README's advice block is stale: run grl-harness advise {REPORT} --readme README.md")


def test_a_row_with_a_wrong_cell_is_not_recommended():
    doc = report.load(ROOT / REPORT)
    for cell in doc["cells"]:
        if (cell["impl"], cell["check"]) == ("witness", "export"):
            cell["status"] = "fail"
    text = advice.render(doc, REPORT)
    assert "❌ `export`" in text and "passes for: `witness`" not in text


def test_readme_latency_figures_equal_the_committed_sweep():
    want = latency.readme_block(latency.load(ROOT / SWEEP), SWEEP)
    got = advice.block(ROOT / "README.md", latency.README_START, latency.README_END)
    assert got == want, (f"README's latency block is stale: run grl-harness advise {REPORT} "
                         f"--readme README.md --latency {SWEEP}")


def test_a_precision_loss_is_told_from_a_wrong_result():
    doc = report.load(ROOT / REPORT)
    for cell in doc["cells"]:
        if (cell["impl"], cell["check"]) == ("witness", "backward.reversal"):
            cell.update(status="fail", summary="alpha rounded to float32")
    text = advice.render(doc, REPORT)
    assert "🔸 `backward.reversal` (alpha rounded to float32)" in text
    assert "❌ `backward.reversal`" not in text.split("| `witness`")[1].split("\n")[0]


def test_readme_upgrade_example_equals_the_diff_of_the_committed_reports():
    old, new = (report.load(ROOT / path) for path in UPGRADE)
    want = gate.readme_block(old, new, *UPGRADE)
    got = advice.block(ROOT / "README.md", gate.README_START, gate.README_END)
    assert got == want, (f"README's gate block is stale: run grl-harness diff {' '.join(UPGRADE)} "
                         "--readme README.md (make readme)")


def test_the_committed_diff_text_is_grl_harness_diff(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the text names the two reports as `make readme` passes them
    assert cli.main(["diff", *UPGRADE]) == 0
    assert capsys.readouterr().out == (ROOT / UPGRADE_DIFF).read_text(encoding="utf-8"), (
        f"{UPGRADE_DIFF} is stale: make readme")


def test_a_changed_cell_changes_the_upgrade_example():
    """The block is the comparison's, not prose: a regression planted in NEW shows in it."""
    old, new = (report.load(ROOT / path) for path in UPGRADE)
    before = gate.readme_block(old, new, *UPGRADE)
    for cell in new["cells"]:
        if (cell["impl"], cell["check"]) == ("witness", "export"):
            cell.update(status="fail", summary="no gradient")
    after = gate.readme_block(old, new, *UPGRADE)
    assert "no regression" in before and "**1 improvement, 139 known, 460 same**" in before
    assert "1 regression: a gate holding the new torch to the old cells fails" in after
    assert "| regression | `witness` | `export` | pass | fail (no gradient) |" in after
    assert "**1 regression, 1 improvement, 139 known, 459 same**" in after


def test_the_diff_cli_rewrites_the_gate_block(tmp_path, capsys):
    for path in UPGRADE:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{gate.README_START}\nold counts\n{gate.README_END}\ntail\n")
    paths = [str(tmp_path / path) for path in UPGRADE]
    assert cli.main(["diff", *paths, "--readme", str(readme)]) == 0
    out, err = capsys.readouterr()
    assert out.rstrip().endswith("1 improvement, 139 known, 460 same")  # printed as before
    assert err.strip() == f"{readme}: updated"  # stdout stays the diff alone
    text = readme.read_text()
    assert "old counts" not in text and text.startswith("head\n") and text.endswith("tail\n")
    assert f"[{UPGRADE[0]}]({UPGRADE[0]})" in text  # linked from the README's folder
    assert cli.main(["diff", *paths, "--readme", str(readme)]) == 0
    assert capsys.readouterr().err.strip() == f"{readme}: unchanged"
    outside = tmp_path / "sub" / "README.md"
    outside.parent.mkdir()
    outside.write_text(text)
    assert cli.main(["diff", *paths, "--readme", str(outside)]) == 2  # no link reaches them
    assert "is not under" in capsys.readouterr().err
