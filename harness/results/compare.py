"""The torch-upgrade gate: compare this run's cells with the expectations for a torch version.

An expectations file (a "baseline") is a report document (schema 1, same cells as the JSON
report) stored as `reports/baselines/torch-<major.minor>.json`. Comparing a run with it sorts
every cell into one verdict:

- `regression`: the baseline says `pass` and the cell no longer passes, or the cell is a `fail`
  the baseline did not have. These fail the run.
- `improvement`: the cell passes where the baseline did not. Listed, never fails.
- `known`: the baseline already has this cell as `fail`/`error` and it still is the same
  (shown by pytest as xfail: a known failure listed in the expectations for this torch).
- `changed`: any other change of status (e.g. `error` -> `skip`). Listed, never fails.
- `new`: the baseline has no such (implementation, check). Listed; a new cell that is `fail`
  is a regression (a wrong result nobody accepted: a renamed row or a new column cannot slip a
  silently wrong gradient past the gate; regenerate the expectations to accept it).
- `removed`: the baseline has a cell this run did not produce. Listed, never fails
  (a filtered run, or a row that left the registry).
- `not judged`: the cell was judged in the baseline, but this run could not judge its column
  (the column's control did not pass here: core/controls.py; every row's cell says so). Listed
  apart, never a regression: a harness that cannot run a column on this torch is not the GRL's
  regression. But the gate cannot vouch for that column either: `columns_held` counts the
  columns this run judged, and a run with a column it could not judge (whatever the baseline
  says of it) ends NOT HELD, with its own exit status, never "ok".
- `same`: unchanged.

This module knows nothing of torch, so the diff CLI and the self-tests run without it.
`readme_block` is the README's upgrade example made by this same comparison, so its counts
cannot drift from `grl-harness diff`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from grl_conformance.core.outcome import is_not_judged
from grl_conformance.results import expectations

REGRESSION, UNJUDGED, IMPROVEMENT, KNOWN, CHANGED, NEW, REMOVED, SAME = (
    "regression", "not judged", "improvement", "known", "changed", "new", "removed", "same")
VERDICT_ORDER = (REGRESSION, UNJUDGED, IMPROVEMENT, CHANGED, NEW, REMOVED, KNOWN, SAME)
BAD = ("fail", "error")
README_START, README_END = "<!-- gate:start -->", "<!-- gate:end -->"

Key = tuple  # (impl, check)


def classify(base: Mapping | None, now: Mapping | None) -> str:
    """The verdict for one (implementation, check) given its baseline and current cells."""
    if base is None and now is None:
        raise ValueError("classify needs at least one cell")
    if base is None:
        return REGRESSION if now["status"] == "fail" else NEW
    if now is None:
        return REMOVED
    if is_not_judged(now) and not is_not_judged(base):
        return UNJUDGED
    was, is_ = base["status"], now["status"]
    if was == "pass" and is_ != "pass":
        return REGRESSION
    if is_ == "fail" and was != "fail":
        return REGRESSION
    if was == is_:
        return KNOWN if is_ in BAD else SAME
    if is_ == "pass":
        return IMPROVEMENT
    return CHANGED


@dataclass
class Comparison:
    """Every cell of two documents with its verdict; `rows[verdict]` lists (key, base, now)."""

    rows: dict[str, list[tuple[Key, dict | None, dict | None]]] = field(
        default_factory=lambda: {v: [] for v in VERDICT_ORDER})

    @property
    def regressions(self) -> list:
        return self.rows[REGRESSION]

    def counts(self) -> dict[str, int]:
        return {v: len(r) for v, r in self.rows.items() if r}


def index(cells: Iterable[Mapping]) -> dict[Key, dict]:
    return {(c["impl"], c["check"]): dict(c) for c in cells}


def compare(base_cells: Iterable[Mapping], now_cells: Iterable[Mapping],
            include_removed: bool = True) -> Comparison:
    """Compare two sets of cells (baseline first). Order: the current run's, then removed ones."""
    base, now = index(base_cells), index(now_cells)
    result = Comparison()
    for key, cell in now.items():
        result.rows[classify(base.get(key), cell)].append((key, base.get(key), cell))
    if include_removed:
        for key, cell in base.items():
            if key not in now:
                result.rows[REMOVED].append((key, cell, None))
    return result


def _status(cell: Mapping | None) -> str:
    if cell is None:
        return "-"
    return f"{cell['status']} ({cell['summary']})" if cell.get("summary") else cell["status"]


def _detail(base: Mapping | None, now: Mapping | None, width: int) -> str:
    cell = now if now is not None else base
    text = " ".join(str((cell or {}).get("detail", "")).split())
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def render(comparison: Comparison, old_label: str = "old", new_label: str = "new",
           show: Iterable[str] = (REGRESSION, UNJUDGED, IMPROVEMENT, CHANGED, NEW, REMOVED),
           detail_width: int = 100) -> str:
    """A table per verdict (worst first) plus a one-line tally; `same`/`known` only counted."""
    out = []
    for verdict in VERDICT_ORDER:
        if verdict not in show or not comparison.rows[verdict]:
            continue
        rows = [[impl, check, _status(b), _status(n), _detail(b, n, detail_width)]
                for (impl, check), b, n in comparison.rows[verdict]]
        out.append(f"{verdict.upper()} ({len(rows)})")
        out.append(tabulate(rows, headers=["impl", "check", old_label, new_label, "detail"],
                            tablefmt="simple"))
        out.append("")
    out.append(f"{old_label} -> {new_label}: {tally(comparison)}")
    return "\n".join(out)


def tally(comparison: Comparison) -> str:
    """`2 changed, 137 known, 449 same`: the diff's last line and the README's count."""
    return ", ".join(f"{n} {v}" for v, n in comparison.counts().items()) or "no cells"


def readme_block(old: Mapping, new: Mapping, old_link: str, new_link: str) -> str:
    """The README's upgrade example: the diff's tally and every cell it lists (all but `known`
    and `same`), as Markdown, from two committed reports."""
    comparison = compare(old["cells"], new["cells"])
    a, b = labels(old, new)
    listed = [v for v in VERDICT_ORDER if v not in (KNOWN, SAME)]
    rows = [(v, key, base, now) for v in listed for key, base, now in comparison.rows[v]]
    regressions = len(comparison.regressions)
    verdict = ("no regression: a gate holding the new torch to the old cells passes" if not regressions
               else f"{regressions} regression{'s' * (regressions > 1)}: a gate holding the new "
                    "torch to the old cells fails")
    lines = [f"`grl-harness diff` of [{old_link}]({old_link}) ({a}, {len(old['cells'])} cells) and "
             f"[{new_link}]({new_link}) ({b}, {len(new['cells'])} cells): **{tally(comparison)}** "
             f"(`known`: a fail or error under both); {verdict}."]
    if rows:
        lines += ["", f"| verdict | impl | check | {a} | {b} |", "|---|---|---|---|---|"]
        lines += [f"| {v} | `{impl}` | `{check}` | {_status(base).replace('|', '/')} | "
                  f"{_status(now).replace('|', '/')} |" for v, (impl, check), base, now in rows]
    return "\n".join(lines)


def doc_label(doc: Mapping, fallback: str) -> str:
    torch = str(doc.get("torch", "")).split("+")[0]
    return f"torch {torch}" if torch else fallback


def labels(old: Mapping, new: Mapping, old_name: str = "old", new_name: str = "new") -> tuple[str, str]:
    """Column labels: the torch versions, with `old_name`/`new_name` added where they are equal."""
    a, b = doc_label(old, old_name), doc_label(new, new_name)
    return (a, b) if a != b else (f"{old_name} ({a})", f"{new_name} ({b})")


# --- what the gate could hold ------------------------------------------------------------

@dataclass(frozen=True)
class Held:
    """This run's columns: judged (held), not judged (their control failed here), or not run
    here at all (every cell a skip the environment explains: no CUDA)."""

    held: tuple[str, ...]
    not_held: tuple[str, ...]
    not_run: tuple[str, ...]

    @property
    def total(self) -> int:
        return len(self.held) + len(self.not_held) + len(self.not_run)


def columns_held(cells: Iterable[Mapping]) -> Held:
    by_column: dict[str, list[Mapping]] = {}
    for cell in cells:
        by_column.setdefault(cell["check"], []).append(cell)
    held, not_held, not_run = [], [], []
    for column, its in by_column.items():
        if any(is_not_judged(c) for c in its):
            not_held.append(column)
        elif all(c["status"] == "skip" for c in its):
            not_run.append(column)
        else:
            held.append(column)
    return Held(tuple(held), tuple(not_held), tuple(not_run))


def failed_controls(doc: Mapping) -> list[str]:
    """Columns this run could not judge: a control that failed or errored, or a not-judged cell."""
    failed = [c for c, o in (doc.get("controls") or {}).items() if o.get("status") in BAD]
    failed += [c for c in columns_held(doc["cells"]).not_held if c not in failed]
    return failed


def gate_line(comparison: Comparison, held: Held | None) -> str:
    """The gate's last line: regressions, columns held, and the verdict (FAILED, NOT HELD, ok)."""
    n = len(comparison.regressions)
    line = f"gate: {n} regression{'s' if n != 1 else ''}"
    if held is not None:
        line += f", {len(held.held)}/{held.total} columns held"
        if held.not_run:
            line += f" ({len(held.not_run)} not run here)"
    if n:
        return line + " -> FAILED"
    if held is not None and held.not_held:
        return (line + f" -> NOT HELD: {len(held.not_held)} column"
                f"{'s' if len(held.not_held) != 1 else ''} not judged on this torch (the column's "
                f"control failed here: the harness or torch broke it, not your GRL; the gate cannot "
                f"vouch for it): {', '.join(held.not_held)}")
    return line + " -> ok"


def harness_version() -> str:
    """The installed grl-conformance's version: every expectations file records the one it was
    made with, and the gate warns when it differs (a changed check can change a cell)."""
    from importlib import metadata

    try:
        return metadata.version("grl-conformance")
    except metadata.PackageNotFoundError:  # run from a source tree nobody installed
        return "unknown (not installed)"


# --- baseline files ---------------------------------------------------------------------

def baseline_path(directory: Path, torch_version: str, device_slug: str = "cpu") -> Path:
    return Path(directory) / expectations.file_name(torch_version, device_slug)


def pick_baseline(directory: Path, torch_version: str, device_slug: str = "cpu") -> Path | None:
    """This torch's expectations file, else the newest older one (harness/results/expectations.py)."""
    choice = expectations.pick(directory, torch_version, device_slug)
    return choice.path if choice else None


def baseline_doc(doc: Mapping) -> dict:
    """A report document as an expectations file: the same document, cells without timings."""
    out = dict(doc)
    out["cells"] = [{k: v for k, v in c.items() if k != "duration_s"} for c in doc["cells"]]
    out.pop("duration_s", None)
    major, minor = expectations.major_minor(str(doc["torch"]))
    out["expectations_for"] = f"torch {major}.{minor}"
    out.setdefault("harness", harness_version())
    return out
