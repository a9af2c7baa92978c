""""Which GRL should I use?": the decision table, drawn from a committed JSON report.

Each column is a concern of a DANN user (compile with a schedule, export for deployment, DDP,
CUDA graphs, torch.func...): core/check.py lists them, each check's registration names its own,
and the report records that per check; a row's entry lists the checks
that did not pass, so every verdict is a cell of the report, never prose. The README holds the
rendered table between markers; `grl-harness advise` rewrites it and a self-test keeps it equal
to the committed report. This module knows nothing of torch.
"""
from __future__ import annotations

from pathlib import Path

from grl_conformance.core.check import CONCERN_NAMES, CONCERNS
from grl_conformance.core.outcome import PRECISION_LOSS
from grl_conformance.results.latency import speed_text
from grl_conformance.results.report import rows_passing_every_column_run

START, END = "<!-- advice:start -->", "<!-- advice:end -->"

OK = ("pass", "n/a")


def precision_only(cell: dict) -> bool:
    """A fail right only to a lower precision (a float64 gradient through a float32 alpha): the
    reversal is there. Not a lost reversal, and not counted as a concern unmet."""
    return cell["status"] == "fail" and (cell.get("summary") or "").startswith(PRECISION_LOSS)


def _entry(cells: list[dict]) -> str:
    bad = [c for c in cells if c["status"] not in OK + ("skip",)]
    if not cells:
        return "-"
    if not bad:
        return "not run here" if all(c["status"] == "skip" for c in cells) else "✅"
    mark = {"fail": "❌", "error": "💥", "xfail": "⚠️"}
    statuses = {c["status"] for c in bad}
    if len(bad) == len(cells) > 2 and len(statuses) == 1 and not any(map(precision_only, bad)):
        return f"{mark.get(bad[0]['status'], bad[0]['status'])} all {len(bad)}"
    return " ".join(f"🔸 `{c['check']}` ({c['summary']})" if precision_only(c)
                    else f"{mark.get(c['status'], c['status'])} `{c['check']}`" for c in bad)


def _concern_of(doc: dict) -> dict[str, str]:
    """check -> concern, as the checks' registrations said when the report was made."""
    concerns = doc.get("concerns")
    if not concerns:
        raise ValueError("the report names no concern per check (made before they were part of "
                         "it): run the matrix again to regenerate it")
    return concerns


def render(doc: dict, report_link: str) -> str:
    """The Markdown table: one row per implementation, best first."""
    cells = doc["cells"]
    concern_of = _concern_of(doc)
    impls = {i["name"]: i for i in doc["impls"]}
    names = [i["name"] for i in doc["impls"] if any(c["impl"] == i["name"] for c in cells)]

    def badness(name: str) -> tuple[int, int, int, str]:
        """Concerns not met, then wrong results, then other non-passes."""
        row = [c for c in cells if c["impl"] == name]
        bad = [c for c in row if c["status"] not in OK + ("skip",)]
        serious = [c for c in bad if not precision_only(c)]
        concerns = len({concern_of.get(c["check"]) for c in serious})
        return (concerns, sum(c["status"] == "fail" for c in serious), len(bad), name)

    names.sort(key=badness)
    sizes = next((i["latency"].get("sizes") for i in impls.values() if i.get("latency")), None)
    speed_head = (f"fwd+bwd float32 at {' · '.join(sizes)}: eager / compiled" if sizes
                  else "fwd+bwd ÷ floor")
    header = ["impl", speed_head] + list(CONCERN_NAMES)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        row = [c for c in cells if c["impl"] == name]
        lat = impls[name].get("latency") or {}
        if sizes:
            ratio = speed_text(lat.get("fwdbwd_s"))
        else:
            value = lat.get("ratio_floor")
            ratio = "-" if value is None else f"×{value:.2f}"
        entries = [_entry([c for c in row if concern_of.get(c["check"]) == name])
                   for name in CONCERN_NAMES]
        lines.append(f"| `{name}` ({impls[name].get('kind', '')}) | {ratio} | "
                     + " | ".join(entries) + " |")
    passing = set(rows_passing_every_column_run(doc))
    clean = [n for n in names if n in passing]
    legend = "; ".join(f"**{c}**: {why}" for c, why in CONCERNS)
    out = [f"From [{report_link}]({report_link}) (torch {doc['torch']}, {doc['device']}). "
           f"✅: every cell of that concern passes; otherwise the cells that did not "
           f"(❌ wrong result, 🔸 right only to a lower precision, e.g. a float64 gradient "
           f"through a float32 alpha: the reversal is there, a float64 user loses digits; "
           f"💥 error, ⚠️ declared unsupported); each has its footnote in the "
           f"report. Columns: {legend}.", "", *lines, ""]
    if clean:
        out.append(f"Every column that ran passes for: {', '.join(f'`{n}`' for n in clean)}.")
    return "\n".join(out).rstrip("\n")


def update_readme(readme: Path, text: str, start: str = START, end: str = END) -> bool:
    """Replace the block between the markers; True when the file changed."""
    old = readme.read_text(encoding="utf-8")
    if start not in old or end not in old:
        raise ValueError(f"{readme}: no {start} ... {end} block")
    head, rest = old.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{text}\n{end}{tail}"
    if new != old:
        readme.write_text(new, encoding="utf-8")
    return new != old


def block(readme: Path, start: str = START, end: str = END) -> str:
    text = readme.read_text(encoding="utf-8")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")
