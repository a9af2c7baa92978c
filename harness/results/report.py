"""Compatibility reports: plain data in, Markdown / JSON / terminal text out.

This module knows nothing of torch: it turns the JSON document (schema 1) into tables.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tabulate import tabulate

from grl_conformance.core.outcome import is_not_judged

SCHEMA = 1
STATUS_ORDER = ("fail", "error", "xfail", "skip", "n/a", "pass")  # worst first

LEGEND = {
    "pass": "ran and behaved correctly",
    "fail": "ran and gave a WRONG result (wrong value or dtype, silently lost reversal): the worst outcome",
    "error": "raised, crashed, failed to build or timed out where it should have worked",
    "skip": "the environment cannot run it (no CUDA, package not installed, needs a newer torch), or "
            "`not judged`: the column's control failed here; the note says which",
    "n/a": "does not apply to this kind of implementation",
    "xfail": "a known failure: declared unsupported by the entry, or listed in the expectations",
}
MARK = {"pass": "✅ pass", "fail": "❌ **FAIL**", "error": "💥 error", "skip": "⏭ skip",
        "n/a": "n/a", "xfail": "⚠️ xfail"}
TERM = {"pass": "pass", "fail": "FAIL", "error": "error", "skip": "skip", "n/a": "n/a",
        "xfail": "xfail"}


def build(env: dict, impls: Iterable[dict], checks: Iterable[str], cells: Iterable[dict],
          duration_s: float, areas: dict[str, list[str]] | None = None,
          concerns: dict[str, str] | None = None) -> dict:
    """The report document; cells ordered by implementation then check."""
    impls = list(impls)
    checks = list(checks)
    row = {i["name"]: n for n, i in enumerate(impls)}
    col = {c: n for n, c in enumerate(checks)}
    ordered = sorted(cells, key=lambda c: (row.get(c["impl"], len(row)), col.get(c["check"], len(col))))
    return {
        "schema": SCHEMA,
        "torch": env["torch"],
        "python": env["python"],
        "device": env["device"],
        "created": env["created"],
        "duration_s": round(duration_s, 2),
        "impls": impls,
        "checks": checks,
        "cells": ordered,
        **({"areas": areas} if areas else {}),
        **({"concerns": concerns} if concerns else {}),  # check -> the advice table's column
        **({"extra": env["extra"]} if env.get("extra") else {}),
        **({"sandbox": env["sandbox"]} if env.get("sandbox") else {}),
        **({"harness": env["harness"]} if env.get("harness") else {}),
    }


def _index(doc: dict) -> dict[tuple[str, str], dict]:
    return {(c["impl"], c["check"]): c for c in doc["cells"]}


def cell_label(cell: dict | None, marks: dict[str, str]) -> str:
    if cell is None:
        return "-"
    label = marks[cell["status"]]
    return f"{label} ({cell['summary']})" if cell.get("summary") else label


def _columns(doc: dict) -> list[str]:
    present = {c["check"] for c in doc["cells"]}
    return [c for c in doc["checks"] if c in present]


def counts(doc: dict) -> dict[str, int]:
    tally = {s: 0 for s in STATUS_ORDER}
    for cell in doc["cells"]:
        tally[cell["status"]] = tally.get(cell["status"], 0) + 1
    return {s: n for s, n in tally.items() if n}


def _rows(doc: dict) -> list[str]:
    index = _index(doc)
    return [i["name"] for i in doc["impls"] if any(k[0] == i["name"] for k in index)]


def _groups(doc: dict, width: int | None = None) -> list[tuple[str, list[str]]]:
    """Columns grouped by area (when the report names areas), each group at most `width` wide."""
    checks = _columns(doc)
    areas = doc.get("areas") or {}
    grouped = [(area, [c for c in ids if c in checks]) for area, ids in areas.items()]
    seen = {c for _, ids in grouped for c in ids}
    grouped = [(a, ids) for a, ids in grouped if ids] + ([("", [c for c in checks if c not in seen])]
                                                         if len(seen) < len(checks) else [])
    if width:
        grouped = [(area, ids[i:i + width]) for area, ids in grouped for i in range(0, len(ids), width)]
    return grouped


def unjudged_columns(doc: dict) -> dict[str, str]:
    """Columns whose control did not pass here -> the control's outcome (from the cells)."""
    found: dict[str, str] = {}
    for cell in doc["cells"]:
        if is_not_judged(cell):
            found.setdefault(cell["check"], cell["detail"])
    return {c: found[c] for c in doc["checks"] if c in found}


def rows_passing_every_column_run(doc: dict) -> list[str]:
    """The rows none of whose cells is worse than `skip` (pass, n/a, skip): the witness's claim,
    which the advice table and the history both state."""
    bad = {c["impl"] for c in doc["cells"] if c["status"] not in ("pass", "n/a", "skip")}
    return [i["name"] for i in doc["impls"] if i["name"] not in bad]


def row_warnings(doc: dict) -> dict[str, list[str]]:
    """Each row's warnings from its own code, over all its cells, first seen first."""
    found: dict[str, list[str]] = {}
    for cell in doc["cells"]:
        for text in cell.get("warnings", ()):
            seen = found.setdefault(cell["impl"], [])
            if text not in seen:
                seen.append(text)
    return found


def controls_line(doc: dict) -> str:
    """One line: how many columns their controls checked, what that cost, which failed."""
    controls = doc.get("controls") or {}
    if not controls:
        return ""
    cost = sum(c.get("duration_s", 0.0) for c in controls.values())
    passed = sum(c.get("status") == "pass" for c in controls.values())
    bad = unjudged_columns(doc)
    text = (f"controls: {len(controls)} columns run first on a trusted GRL ({cost:.1f} s of cell "
            f"time): {passed} passed, {len(controls) - passed - len(bad)} skipped with every row")
    if not bad:
        return text + "; every column that ran is judged"
    return text + f"; {len(bad)} NOT JUDGED here (their control did not pass): " + ", ".join(bad)


def _row_tally(doc: dict, name: str) -> list[int]:
    statuses = [c["status"] for c in doc["cells"] if c["impl"] == name]
    return [statuses.count(s) for s in STATUS_ORDER]


def render_terminal(doc: dict) -> str:
    """Matrix for the terminal: one table per area (split when wide), so it fits a screen."""
    index = _index(doc)
    names = _rows(doc)
    latency = _latency(doc)
    out = [tabulate([[n] + ([latency[n]] if latency else []) + _row_tally(doc, n) for n in names],
                    headers=["impl"] + ([LATENCY_HEADER] if latency else []) + list(STATUS_ORDER),
                    tablefmt="simple")]
    controls = controls_line(doc)
    if controls:
        out.append(controls)
    for area, group in _groups(doc, width=8):
        rows = [[name] + [cell_label(index.get((name, c)), TERM) for c in group] for name in names]
        out.append(tabulate(rows, headers=[area or "impl"] + group, tablefmt="simple"))
    tally = ", ".join(f"{n} {s}" for s, n in counts(doc).items())
    out.append(f"{len(doc['cells'])} cells: {tally}")
    for name, texts in row_warnings(doc).items():
        out.append(f"{name} warns from its own code: " + " | ".join(texts[:3])
                   + (f" (+{len(texts) - 3} more)" if len(texts) > 3 else ""))
    worst = [c for c in doc["cells"] if c["status"] == "fail"]
    if worst:
        out.append("WRONG RESULTS (fail):")
        out += [f"  {c['impl']} / {c['check']}: {c['detail']}" for c in worst]
    return "\n".join(out)


def render_markdown(doc: dict) -> str:
    index = _index(doc)
    names = _rows(doc)
    latency = _latency(doc)
    notes: dict[tuple[str, str], int] = {}  # (status, detail) -> footnote number: one note per text

    def label(name: str, check: str) -> str:
        cell = index.get((name, check))
        text = cell_label(cell, MARK)
        if cell is not None and (cell["status"] != "pass" or cell.get("summary") == "unexpected"):
            detail = _md_escape(cell["detail"]) or "(no detail)"
            if cell.get("repro"):
                detail += f"<br>rerun: `{cell['repro']}`"
            key = (cell["status"], detail)
            number = notes.setdefault(key, len(notes) + 1)
            text += f" [^{number}]"
        return text

    tables: list[str] = []
    for area, group in _groups(doc):
        rows = [[f"`{name}`"] + [label(name, c) for c in group] for name in names]
        tables += [f"### {area}" if area else "### checks", "",
                   tabulate(rows, headers=["impl"] + [f"`{c}`" for c in group], tablefmt="github"), ""]
    summary = [[f"`{n}`"] + ([latency[n]] if latency else []) + [v or "" for v in _row_tally(doc, n)]
               for n in names]
    impl_rows = [[f"`{i['name']}`", i["kind"], i["origin"]] for i in doc["impls"] if i["name"] in names]
    lines = [
        f"# GRL compatibility matrix: torch {doc['torch']}, {doc['device']}",
        "",
        tabulate([["torch", doc["torch"]], ["python", doc["python"]], ["device", doc["device"]],
                  ["created", doc["created"]], ["duration", f"{doc['duration_s']} s"],
                  *([["sandbox", doc["sandbox"]]] if doc.get("sandbox") else []),
                  ["cells", ", ".join(f"{n} {s}" for s, n in counts(doc).items())]],
                 headers=["environment", ""], tablefmt="github"),
        "",
        *([controls, ""] if (controls := controls_line(doc)) else []),
        *_unjudged_section(doc),
        "## Summary",
        "",
        tabulate(summary, headers=["impl"] + ([LATENCY_HEADER] if latency else [])
                 + [MARK[s] for s in STATUS_ORDER], tablefmt="github"),
        "",
        *([_latency_note(doc), ""] if latency else []),
        "## Matrix",
        "",
        "Rows are implementations, columns are checks (ids defined in docs/checks.md), one table per area. "
        "A footnote on every cell that is not a plain pass gives its detail.",
        "",
        *tables,
        "## Legend",
        "",
        tabulate([[MARK[s], LEGEND[s]] for s in ("fail", "error", "xfail", "skip", "n/a", "pass")],
                 headers=["cell", "meaning"], tablefmt="github"),
        "",
        "## Implementations",
        "",
        tabulate(impl_rows, headers=["impl", "kind", "origin"], tablefmt="github"),
        "",
    ]
    warned = row_warnings(doc)
    if warned:
        lines += ["## Warnings from the implementations' own code", "",
                  "Raised from the row's own source folder during its cells (deprecations "
                  "predict the next upgrade's errors).", "",
                  tabulate([[f"`{n}`", "<br>".join(_md_escape(t) for t in texts)]
                            for n, texts in warned.items()],
                           headers=["impl", "warnings"], tablefmt="github"), ""]
    extra = doc.get("extra") or {}
    for title, text in extra.items():
        lines += [f"## {title}", "", text, ""]
    if notes:
        lines += ["## Notes", ""]
        lines += [f"[^{n}]: {status}: {detail}" for (status, detail), n in notes.items()] + [""]
    return "\n".join(lines)


def _unjudged_section(doc: dict) -> list[str]:
    bad = unjudged_columns(doc)
    if not bad:
        return []
    controls = doc.get("controls") or {}
    rows = [[f"`{c}`", f"`{controls.get(c, {}).get('control', '?')}`", _md_escape(detail)]
            for c, detail in bad.items()]
    return ["## Columns not judged here", "",
            "Each column runs first on a trusted GRL (its control). These did not pass it in "
            "this environment, so no row is judged in them: every cell is `skip (not judged)`.", "",
            tabulate(rows, headers=["column", "control", "why"], tablefmt="github"), ""]


LATENCY_HEADER = "fwd+bwd ÷ floor"


def _latency(doc: dict) -> dict[str, str]:
    """Row name -> overhead ratio text, where a latency sweep annotated the rows; else {}."""
    if not any(i.get("latency") for i in doc["impls"]):
        return {}
    out = {}
    for impl in doc["impls"]:
        ratio = (impl.get("latency") or {}).get("ratio_floor")
        out[impl["name"]] = "-" if ratio is None else f"×{ratio:.2f}"
    return out


def _latency_note(doc: dict) -> str:
    lat = next(i["latency"] for i in doc["impls"] if i.get("latency"))
    return (f"`{LATENCY_HEADER}`: median time of {lat['at']} ({lat['device']}) divided by the "
            f"one-kernel floor (`grad * -alpha`), from the latency sweep of {lat['created']} "
            "(`grl-harness sweep`, docs/sweep.md); not part of the pass/fail verdict.")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write(doc: dict, directory: Path, slug: str) -> list[Path]:
    """Write `compat-<slug>.md`, `compat-<slug>.json` and `latest.json`; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / f"compat-{slug}.md"
    js = directory / f"compat-{slug}.json"
    latest = directory / "latest.json"
    md.write_text(render_markdown(doc), encoding="utf-8")
    payload = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    js.write_text(payload, encoding="utf-8")
    latest.write_text(payload, encoding="utf-8")
    return [md, js, latest]


def load(path: Path | str) -> dict:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: report schema {doc.get('schema')!r}, expected {SCHEMA}")
    return doc
