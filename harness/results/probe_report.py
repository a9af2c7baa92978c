"""The reversal probe's documents: plain data in, terminal table / Markdown / JSON out (no torch).

The document (`build`) is the probe's JSON format: the spec's name, the environment (torch,
python, device, date), one list of verdicts per mode (`eager`, and `compiled` with --compile),
the checks whose status differs between the modes, and `ok`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tabulate import tabulate

from grl_conformance.results.report import MARK, TERM

SCHEMA = 1
KIND = "grl-probe"


def build(name: str, env: dict, duration_s: float, runs: dict[str, list[dict]],
          differences: list[str], ok: bool, compile: dict | None = None,
          notes: list[str] | None = None) -> dict:
    """`compile`: what torch.compile did in the compiled run (graphs, recompiles, fallbacks to
    eager, and its one line); `notes`: what the probe did beyond the spec's words (where it
    found the reversal inside the domain head)."""
    return {
        "schema": SCHEMA, "kind": KIND, "spec": name,
        "torch": env.get("torch", "?"), "python": env.get("python", "?"),
        "device": env.get("device", "?"), "created": env.get("created", "?"),
        "duration_s": round(duration_s, 2),
        "ok": ok, "runs": runs, "differences": differences,
        **({"compile": compile} if compile else {}),
        **({"notes": notes} if notes else {}),
    }


def _table(doc: dict, marks: dict[str, str], escape=lambda s: s) -> tuple[list[str], list[list[str]]]:
    modes = list(doc["runs"])
    by_mode = {mode: {v["check"]: v for v in doc["runs"][mode]} for mode in modes}
    checks = [v["check"] for v in doc["runs"][modes[0]]] if modes else []
    rows = [[c, *(f"{marks[by_mode[m][c]['status']]}: {escape(by_mode[m][c]['summary'])}"
                  for m in modes)] for c in checks]
    label = (doc.get("compile") or {}).get("label", "compiled")
    return ["check", *(label if m == "compiled" else m for m in modes)], rows


def _said(doc: dict) -> list[str]:
    """The lines under the table: where the probe measured, and what torch.compile did."""
    lines = list(doc.get("notes") or ())
    if doc.get("compile"):
        lines.append(f"torch.compile: {doc['compile']['line']}")
    return lines


def _header(doc: dict) -> str:
    return (f"torch {doc['torch']}, python {doc['python']}, {doc['device']}, {doc['created']}, "
            f"{doc['duration_s']} s")


def _verdict(doc: dict) -> str:
    failing = sorted({v["check"] for run in doc["runs"].values() for v in run if v["status"] == "fail"})
    errored = sorted({f"{v['check']} ({mode})" for mode, run in doc["runs"].items() for v in run
                      if v["status"] == "error"})
    unverified = sorted({v["check"] for run in doc["runs"].values() for v in run
                         if v.get("unverified")})
    if doc["ok"]:
        return "OK: every check passed, or skipped because the spec did not ask for it"
    could_not = (f"could not run: {', '.join(errored)} (an error of the probe or torch.compile, "
                 "not a wiring verdict)") if errored else ""
    if failing:
        return f"NOT OK: {', '.join(failing)}" + "".join(
            f"; {text}" for text in (could_not, f"not verified: {', '.join(unverified)}"
                                     if unverified else "") if text)
    if errored:
        return f"NOT OK: {could_not}"
    return f"NOT VERIFIED: {', '.join(unverified)} could not be measured (the summary says why)"


def render_terminal(doc: dict) -> str:
    headers, rows = _table(doc, TERM)
    lines = [f"reversal probe of {doc['spec']}: {_header(doc)}",
             tabulate(rows, headers=headers, tablefmt="simple", maxcolwidths=[None] + [90] * (len(headers) - 1))]
    lines += _said(doc)
    lines += [f"differs under torch.compile: {d}" for d in doc["differences"]]
    lines.append(_verdict(doc))
    return "\n".join(lines)


def render_markdown(doc: dict) -> str:
    headers, rows = _table(doc, MARK, escape=lambda s: s.replace("|", "\\|"))
    lines = [f"# Reversal probe: `{doc['spec']}`", "", _header(doc), "",
             tabulate(rows, headers=headers, tablefmt="github"), ""]
    if _said(doc):
        lines += [f"- {line}" for line in _said(doc)] + [""]
    if doc["differences"]:
        lines += ["Differences under `torch.compile`:", ""]
        lines += [f"- {d}" for d in doc["differences"]] + [""]
    lines += [f"**{_verdict(doc)}**", ""]
    return "\n".join(lines)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "spec"


def write_json(doc: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write(doc: dict, directory: Path) -> list[Path]:
    """`probe-<spec>.md` and `probe-<spec>.json` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    base = f"probe-{slug(doc['spec'])}"
    md = directory / f"{base}.md"
    md.write_text(render_markdown(doc), encoding="utf-8")
    return [md, write_json(doc, directory / f"{base}.json")]
