"""Expectations: the one home of what each cell is expected to be, per torch (and device).

An expectations file is a report document (schema 1) stored as
`reports/baselines/torch-<major.minor>.json` (CPU) or `torch-<major.minor>-cuda.json`, written by
`--grl-update-baseline` and reviewed like code. It serves two purposes, as array-api-tests' xfails
files and `torch.library.opcheck`'s failures dict do:

- the **reference pins**: the repo's own reference rows (`Impl.reference`) must give exactly the
  status written there. A deviation fails that cell's test, naming the cell and the file; a
  listed failure that now passes is *stale* and is reported (the file needs regenerating), not
  failed;
- the **gate** (`--grl-baseline`, harness/results/compare.py): a regression of any row fails the run.

A torch or device with no file of its own is held to the newest older file of the same device
(CPU files stand in for CUDA), and the run header says so. Every cell must name a registered
check; cells of the package's own rows must name a row that exists: anything else is an error
naming it, so a typo cannot silently pin nothing.

This module knows nothing of torch.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from grl_conformance.core.outcome import NOT_INSTALLED, is_not_judged

FILE_RE = re.compile(r"^torch-(\d+)\.(\d+)(-cuda)?\.json$")


def major_minor(version: str) -> tuple[int, int]:
    parts = version.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def file_name(torch_version: str, device_slug: str = "cpu") -> str:
    major, minor = major_minor(torch_version)
    return f"torch-{major}.{minor}{'-cuda' if device_slug.startswith('cuda') else ''}.json"


@dataclass(frozen=True)
class Choice:
    path: Path
    exact: bool  # the file is for this torch major.minor and this device kind
    same_device: bool  # False: a CPU file stands in for a CUDA run
    note: str  # what the run header says


def pick(directory: Path | str, torch_version: str, device_slug: str = "cpu") -> Choice | None:
    """This torch's file for this device kind, else the newest older one (CUDA falls back to CPU)."""
    want = major_minor(torch_version)
    cuda = device_slug.startswith("cuda")
    found = []
    for path in Path(directory).glob("torch-*.json"):
        match = FILE_RE.match(path.name)
        if not match:
            continue
        version = (int(match.group(1)), int(match.group(2)))
        same_device = bool(match.group(3)) == cuda
        if version <= want and (same_device or not match.group(3)):
            found.append((same_device, version, path))
    if not found:
        return None
    same_device, version, path = max(found)
    exact = same_device and version == want
    label = f"torch {want[0]}.{want[1]} {'cuda' if cuda else 'cpu'}"
    if exact:
        note = f"expectations: {path} ({label})"
    else:
        note = (f"expectations: {path} holds {label} (no file of its own: held to torch "
                f"{version[0]}.{version[1]}{'' if same_device else ' cpu'})")
    return Choice(path, exact, same_device, note)


def validate(doc: Mapping, path: Path | str, checks: Iterable[str],
             own_rows: Iterable[str] | None = None) -> None:
    """Refuse a file naming an unknown check, or one of the package's rows that does not exist.

    own_rows: the package's own row names; cells of other rows (a user's, a package's) are
    checked for their check id only.
    """
    checks = set(checks)
    unknown_checks = sorted({c["check"] for c in doc["cells"]} - checks)
    if unknown_checks:
        raise ValueError(f"{path}: unknown check id(s) {', '.join(unknown_checks)} "
                         f"(registered: see docs/checks.md)")
    if own_rows is not None:
        declared = {i["name"] for i in doc.get("impls", ())}
        own = set(own_rows)
        # A row the file declares as one of this repo's (origin) but that no longer exists.
        gone = sorted(name for name in declared if name not in own
                      and str(_origin(doc, name)).startswith("grl-conformance"))
        if gone:
            raise ValueError(f"{path}: expectations for row(s) {', '.join(gone)}, which the "
                             f"registry does not have")


def _origin(doc: Mapping, name: str) -> str:
    return next((i.get("origin", "") for i in doc.get("impls", ()) if i["name"] == name), "")


OK, STALE, DEVIATES, UNPINNED = "ok", "stale", "deviates", "unpinned"


class Pins:
    """The reference rows' expected cells from one expectations file."""

    def __init__(self, doc: Mapping, choice: Choice) -> None:
        self.choice = choice
        self.cells = {(c["impl"], c["check"]): c for c in doc["cells"]}

    def judge(self, cell: Mapping) -> tuple[str, str]:
        """(verdict, message) for a reference row's finished cell."""
        key = (cell["impl"], cell["check"])
        want = self.cells.get(key)
        where = f"{self.choice.path.name}"
        if want is None:
            return UNPINNED, (f"{key[0]} / {key[1]} has no expectation in {where}: regenerate it "
                              "with --grl-update-baseline")
        was, now = want["status"], cell["status"]
        if was == now:
            return OK, ""
        if is_not_judged(cell):
            # The column's control failed here: nothing was judged, so nothing deviates (the
            # gate and the run's header say the column was not held).
            return UNPINNED, f"{key[0]} / {key[1]} not judged here: {cell.get('detail', '')}"
        if now == "skip" and cell.get("summary") == NOT_INSTALLED:
            # An optional extra missing here (onnx): the cell is not judged, the pin stands.
            return UNPINNED, f"{key[0]} / {key[1]} not judged here: {cell.get('detail', '')}"
        if was == "skip" and not self.choice.same_device:
            # A CPU file standing in for CUDA: the cells it skipped ran here, unpinned.
            return UNPINNED, (f"{key[0]} / {key[1]} ran here ({now}) but {where} is from a CPU "
                              "run (skip there): write a -cuda expectations file to pin it")
        if now == "pass":
            return STALE, (f"stale expectation: {key[0]} / {key[1]} is listed as {was} in {where} "
                           f"but passes now: regenerate the file")
        return DEVIATES, (f"reference row {key[0]} / {key[1]} should be {was} per {where}, got "
                          f"{now}: {cell.get('detail', '')}")
