"""The torch history: one matrix per torch minor in, one Markdown page out (no torch import).

`make history` runs the whole matrix once per torch minor release (latest patch) into
reports/history/; `grl-harness history reports/history` turns those JSON reports into
reports/history/README.md:

- the releases measured, with each run's wall time;
- every change between neighbouring releases, grouped by column and transition
  ("torch 2.14: `jit.script` pass -> error for every Function GRL"), with the new detail;
- for each row and column, the releases where it passes, as ranges ("2.7-2.14", "all", "never").
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from tabulate import tabulate

REPORT_RE = re.compile(r"^compat-(\d+)\.(\d+)\.(\d+)-(\w+)\.json$")


def version_key(torch_version: str) -> tuple[int, int, int]:
    parts = (torch_version.split("+")[0].split(".") + ["0", "0"])[:3]
    return tuple(int(re.match(r"\d*", p).group() or 0) for p in parts)  # type: ignore[return-value]


def minor(torch_version: str) -> str:
    major, mnr, _ = version_key(torch_version)
    return f"{major}.{mnr}"


def load_reports(directory: Path | str, device: str = "cpu") -> list[dict]:
    """The JSON reports in `directory` for one device kind, oldest torch first."""
    docs = []
    for path in Path(directory).glob("compat-*.json"):
        match = REPORT_RE.match(path.name)
        if match and match.group(4) == device:
            doc = json.loads(path.read_text(encoding="utf-8"))
            doc["_file"] = path.name
            docs.append(doc)
    return sorted(docs, key=lambda d: version_key(d["torch"]))


def read_wall_times(path: Path | str) -> dict[str, dict[str, int]]:
    """`make history`'s wall-times.txt: `<torch> install_s=N matrix_s=N` per line (last wins)."""
    times: dict[str, dict[str, int]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return times
    for line in lines:
        version, *fields = line.split()
        times[minor(version)] = {k: int(v) for k, _, v in (f.partition("=") for f in fields) if v.isdigit()}
    return times


def pass_ranges(passes: list[bool], labels: list[str], present: list[bool]) -> str:
    """`all`, `never`, or ranges of consecutive releases where the cell passes ("2.7-2.14")."""
    if not any(present):
        return "-"
    if all(p for p, here in zip(passes, present, strict=True) if here) and any(passes):
        return "all" if all(present) else "all measured"
    if not any(passes):
        return "never"
    spans, start = [], None
    for i, ok in enumerate([*passes, False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            spans.append(labels[start] if start == i - 1 else f"{labels[start]}-{labels[i - 1]}")
            start = None
    return ", ".join(spans)


def _cells(doc: Mapping) -> dict[tuple[str, str], dict]:
    return {(c["impl"], c["check"]): c for c in doc["cells"]}


def _label(cell: Mapping | None) -> str:
    if cell is None:
        return "absent"
    return f"{cell['status']} ({cell['summary']})" if cell.get("summary") else cell["status"]


def changes(older: Mapping, newer: Mapping) -> list[dict]:
    """Status changes from one release to the next, grouped by (column, old status, new status)."""
    a, b = _cells(older), _cells(newer)
    groups: dict[tuple[str, str, str], list[str]] = {}
    details: dict[tuple[str, str, str], str] = {}
    for key in sorted(set(a) | set(b), key=lambda k: (k[1], k[0])):
        was, now = a.get(key), b.get(key)
        if was is not None and now is not None and was["status"] == now["status"]:
            continue
        if was is None or now is None:
            continue  # a row that one of the two runs lacks (a package that did not install)
        group = (key[1], was["status"], now["status"])
        groups.setdefault(group, []).append(key[0])
        details.setdefault(group, (now if now["status"] != "pass" else was).get("detail", ""))
    both = {i for i, _ in a} & {i for i, _ in b}
    return [{"check": check, "was": was, "now": now, "rows": rows,
             "every_row": set(rows) == both, "detail": details[(check, was, now)]}
            for (check, was, now), rows in sorted(groups.items(), key=lambda g: (_order(g[0]), g[0]))]


def _order(group: tuple[str, str, str]) -> int:
    """Breakages first (a pass lost, a new fail), then fixes, then the rest."""
    _, was, now = group
    if now == "fail" or (was == "pass" and now != "pass"):
        return 0
    return 1 if now == "pass" else 2


def render(docs: list[dict], wall_times: Mapping[str, Mapping[str, int]] | None = None) -> str:
    if not docs:
        raise ValueError("no reports: run `make history` first")
    wall_times = wall_times or {}
    labels = [minor(d["torch"]) for d in docs]
    out = [f"# GRL compatibility across torch releases ({labels[0]} to {labels[-1]})", "",
           "Generated by `make history` (one venv per torch minor release, latest patch, the "
           "whole matrix with the published packages) and `grl-harness history reports/history`. "
           "Each release's full matrix is beside this page; its expectations file is "
           "`reports/baselines/torch-<minor>.json`. A cell `skip (not judged)` means the "
           "column's control failed on that torch (the harness could not judge it, no row is "
           "charged); `skip (needs torch >= X)` means that torch lacks what the column needs.", "",
           "## Releases measured", ""]
    rows = []
    for doc, label in zip(docs, labels, strict=True):
        tally: dict[str, int] = {}
        for cell in doc["cells"]:
            tally[cell["status"]] = tally.get(cell["status"], 0) + 1
        unjudged = sorted({c["check"] for c in doc["cells"] if c.get("summary") == "not judged"})
        times = wall_times.get(label, {})
        rows.append([f"[{doc['torch']}]({doc['_file'].replace('.json', '.md')})", doc["created"][:10],
                     f"{times['install_s']} s" if "install_s" in times else "",
                     f"{times['matrix_s']} s" if "matrix_s" in times else f"{doc['duration_s']:.0f} s",
                     ", ".join(f"{n} {s}" for s, n in sorted(tally.items())),
                     ", ".join(f"`{c}`" for c in unjudged) or "none"])
    out += [tabulate(rows, headers=["torch", "run on", "install", "matrix wall time", "cells",
                                    "columns not judged"], tablefmt="github"), ""]
    out += ["## Changes between neighbouring releases", "",
            "Grouped by column: which rows changed, from what to what, and the detail of the "
            "first one. Breakages first.", ""]
    for older, newer, la, lb in zip(docs, docs[1:], labels, labels[1:], strict=False):
        found = changes(older, newer)
        out += [f"### torch {la} -> {lb}", ""]
        if not found:
            out += ["No cell changed status.", ""]
            continue
        for change in found:
            who = "every row" if change["every_row"] else ", ".join(f"`{r}`" for r in change["rows"])
            detail = " ".join(str(change["detail"]).split())
            detail = detail if len(detail) <= 300 else detail[:299] + "\u2026"
            out.append(f"- `{change['check']}`: {change['was']} -> {change['now']} for {who}"
                       + (f": {detail}" if detail else ""))
        out.append("")
    out += ["## Where each cell passes", "",
            "The torch releases where the cell passes: `all`, `never`, or ranges "
            f"(measured: {', '.join(labels)}).", ""]
    newest = docs[-1]
    checks = list(newest["checks"])
    for doc in docs:
        checks += [c for c in doc["checks"] if c not in checks]
    impls: list[str] = []
    for doc in reversed(docs):
        impls += [i["name"] for i in doc["impls"] if i["name"] not in impls]
    indexed = [_cells(d) for d in docs]
    areas = newest.get("areas") or {"checks": checks}
    for area, ids in areas.items():
        table = []
        for impl in impls:
            row = [f"`{impl}`"]
            for check in ids:
                present = [(impl, check) in cells for cells in indexed]
                passes = [cells.get((impl, check), {}).get("status") == "pass" for cells in indexed]
                row.append(pass_ranges(passes, labels, present))
            table.append(row)
        out += [f"### {area}", "", tabulate(table, headers=["impl"] + [f"`{c}`" for c in ids],
                                            tablefmt="github"), ""]
    return "\n".join(out)


def render_dir(directory: Path | str) -> str:
    directory = Path(directory)
    return render(load_reports(directory), read_wall_times(directory / "wall-times.txt"))

