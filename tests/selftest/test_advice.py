"""The README's "Which GRL should I use?" table is the committed report, rendered."""
from __future__ import annotations

from pathlib import Path

from grl_conformance.results import advice, latency, report

ROOT = Path(__file__).resolve().parents[2]
REPORT = "reports/compat-2.13.0-cpu.json"
SWEEP = "reports/latency-2.13.0-cpu.json"


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
