"""The torch history: one matrix per torch minor in, one Markdown page out (no torch import).

`make history` runs the whole matrix once per torch minor release (latest patch) into
reports/history/; `grl-harness history reports/history` turns those JSON reports into
reports/history/README.md:

- the releases measured, with each run's wall time;
- every change between neighbouring releases, grouped by column and transition
  ("torch 2.14: `jit.script` pass -> error for every Function GRL"), with the new detail;
- for each row and column, the releases where it passes, as ranges ("2.7-2.14", "all", "never").

`--readme README.md` also rewrites the README's history block (`readme_block`): every figure the
README states about the history (releases, columns, wall times, what was not judged where)
comes from these reports and `wall-times.txt`, so none can go stale by hand.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from tabulate import tabulate

from grl_conformance.results.compare import index
from grl_conformance.results.report import counts, rows_passing_every_column_run, unjudged_columns

REPORT_RE = re.compile(r"^compat-(\d+)\.(\d+)\.(\d+)-(\w+)\.json$")
README_START, README_END = "<!-- history:start -->", "<!-- history:end -->"
WALL_TIMES = "wall-times.txt"


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
    """`make history`'s wall-times.txt: `<torch> install_s=N matrix_s=N` per line, appended per
    run; the last line of a release is the run of its report (last wins), `runs` counts them."""
    times: dict[str, dict[str, int]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return times
    for line in lines:
        if not line.strip():
            continue
        version, *fields = line.split()
        runs = times.get(minor(version), {}).get("runs", 0) + 1
        times[minor(version)] = {**{k: int(v) for k, _, v in (f.partition("=") for f in fields)
                                    if v.isdigit()}, "runs": runs}
    return times


def load_dir(directory: Path | str) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """The reports of a history folder and its wall times: what the page and the block read."""
    directory = Path(directory)
    return load_reports(directory), read_wall_times(directory / WALL_TIMES)


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


def changes(older: Mapping, newer: Mapping) -> list[dict]:
    """Status changes from one release to the next, grouped by (column, old status, new status)."""
    a, b = index(older["cells"]), index(newer["cells"])
    groups: dict[tuple[str, str, str], list[str]] = {}
    details: dict[tuple[str, str, str], str] = {}
    for key in sorted(set(a) | set(b), key=lambda k: (k[1], k[0])):
        was, now = a.get(key), b.get(key)
        if was is None or now is None:
            continue  # a row that one of the two runs lacks (a package that did not install)
        if was["status"] == now["status"]:
            continue
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
        tally = counts(doc)
        unjudged = sorted(unjudged_columns(doc))
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
    indexed = [index(d["cells"]) for d in docs]
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


# --- the README's history figures -----------------------------------------------------------

def _brief(text: str) -> str:
    """A control's reason, short enough for a table cell: its first clause."""
    return " ".join(text.split()).split(" (")[0].split(": ")[0].replace("|", "/")


def skipped_columns(doc: Mapping) -> dict[str, str]:
    """Column -> why no row was judged in it: its control failed (`not judged`) or skipped (the
    torch or the machine lacks what it needs), from the report's controls and cells."""
    unjudged = unjudged_columns(dict(doc))
    out = {}
    for check, control in (doc.get("controls") or {}).items():
        if check in unjudged:
            why = _brief(control.get("summary") or control.get("detail", ""))
            out[check] = f"not judged (control {control.get('status', '?')}" + (f": {why})" if why else ")")
        elif control.get("status") == "skip":
            out[check] = f"skip ({_brief(control.get('summary') or control.get('detail', ''))})"
    out.update({c: "not judged" for c in unjudged if c not in out})
    return out


def _timeouts(doc: Mapping) -> str:
    """`, 4 cells timed out`: a hung cell costs its whole timeout, so it explains a slow run."""
    cells = sum(c.get("summary") == "timeout" for c in doc["cells"])
    controls = sum(c.get("summary") == "timeout" for c in (doc.get("controls") or {}).values())
    said = [f"{n} {what}{'s' * (n > 1)}" for n, what in ((cells, "cell"), (controls, "control")) if n]
    return f", {' and '.join(said)} timed out" if said else ""


def _join(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


def readme_block(docs: list[dict], wall_times: Mapping[str, Mapping[str, int]], link: str) -> str:
    """The README's Torch versions figures: the releases measured, each one's report date, wall
    times (install, matrix; the last run of each), how often it ran, the columns not judged or not
    run there and why, and the rows that pass every judged column; then the total."""
    if not docs:
        raise ValueError("no reports: run `make history` first")
    labels = [minor(d["torch"]) for d in docs]
    folder = "" if link in ("", ".") else f"{link}/"
    skipped = [skipped_columns(d) for d in docs]
    everywhere = {c: why for c, why in skipped[0].items() if all(s.get(c) == why for s in skipped)}
    shapes = sorted({(len(d["checks"]), len(d["impls"])) for d in docs})
    devices = list(dict.fromkeys(d["device"] for d in docs))
    header = ["torch", "report of", "install", "matrix", "runs timed"]
    header += ["columns x rows"] if len(shapes) > 1 else []
    header += ["columns not judged or not run there", "every judged column passes for"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    install = matrix = 0
    for doc, label, cols in zip(docs, labels, skipped, strict=True):
        times = wall_times.get(label, {})
        install += times.get("install_s", 0)
        matrix += times.get("matrix_s", 0)
        page = f"{folder}{doc['_file'].replace('.json', '.md')}"
        clean = rows_passing_every_column_run(doc)
        here = "; ".join(f"`{c}` {why}" for c, why in cols.items() if c not in everywhere)
        cells = [f"[{doc['torch'].split('+')[0]}]({page})", doc["created"][:10],
                 f"{times['install_s']} s" if "install_s" in times else "-",
                 (f"{times['matrix_s']} s" if "matrix_s" in times else "-") + _timeouts(doc),
                 str(times.get("runs", 0))]
        cells += [f"{len(doc['checks'])} x {len(doc['impls'])}"] if len(shapes) > 1 else []
        cells += [here or "none", ", ".join(f"`{n}`" for n in clean) or "no row"]
        table.append("| " + " | ".join(cells) + " |")
    shape = (f"the whole matrix, {shapes[0][0]} columns x {shapes[0][1]} rows" if len(shapes) == 1
             else "the whole matrix (columns x rows in the table)")
    by_reason: dict[str, list[str]] = {}
    for check, why in everywhere.items():
        by_reason.setdefault(why, []).append(check)
    common = "".join(f" Every release: {_join(cs)} {why}." for why, cs in by_reason.items())
    total = install + matrix
    timed = sum(label in wall_times for label in labels)
    return "\n".join([
        f"From the reports in [{folder or './'}]({folder}README.md) and the wall times `make "
        f"history` appends to [{folder}{WALL_TIMES}]({folder}{WALL_TIMES}) (a release's last line is its "
        f"report's run): {len(docs)} torch releases, {labels[0]} to {labels[-1]}, {shape}, "
        f"on {'; '.join(devices)}.{common} One pass over the {timed} releases timed, as "
        f"committed: {total / 60:.0f} min ({install} s installing torch, {matrix} s of matrix).",
        "", *table])

