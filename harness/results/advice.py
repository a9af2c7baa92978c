""""Which GRL should I use?": the decision table, drawn from a committed JSON report.

Each column is a concern of a DANN user (compile with a schedule, export for deployment, DDP,
CUDA graphs, torch.func...) mapped to the checks that answer it; a row's entry lists the checks
that did not pass, so every verdict is a cell of the report, never prose. The README holds the
rendered table between markers; `grl-harness advise` rewrites it and a self-test keeps it equal
to the committed report. This module knows nothing of torch.
"""
from __future__ import annotations

from pathlib import Path

from grl_conformance.core.outcome import PRECISION_LOSS
from grl_conformance.results.latency import speed_text

START, END = "<!-- advice:start -->", "<!-- advice:end -->"

# (concern, when it matters to a DANN user, check-id prefixes or ids)
CONCERNS = (
    ("eager", "any training: right forward and -alpha * grad, alpha updates, several GRLs",
     ("forward.identity", "backward.", "alpha.update", "graph.", "inplace.after")),
    ("memory", "large activations: nothing saved for backward, each step's graph freed",
     ("memory.",)),
    ("compile", "torch.compile with the DANN alpha schedule", ("compile.", "checkpoint.compiled")),
    ("deploy", "shipping the model: torch.export, TorchScript, ONNX, FX feature extraction",
     ("export", "jit.", "onnx.", "fx.")),
    ("distributed", "DDP, compiled DDP, FSDP2, DTensor", ("ddp.", "fsdp", "dtensor")),
    ("training tricks", "AMP, activation checkpointing, EMA copies and checkpoints",
     ("amp.", "checkpoint.reentrant", "checkpoint.nonreentrant", "checkpoint.selective",
      "serialize.")),
    ("torch.func", "vmap / grad / jvp (meta-learning, per-sample gradients)", ("func.",)),
    ("CUDA graphs", "capture with reduce-overhead or CUDA graphs", ("cuda.",)),
    ("DANN", "a DANN trained through it adapts (two moons)", ("train.",)),
)
OK = ("pass", "n/a")


def _matches(check: str, patterns: tuple[str, ...]) -> bool:
    return any(check == p or (p.endswith(".") and check.startswith(p)) for p in patterns)


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


def render(doc: dict, report_link: str) -> str:
    """The Markdown table: one row per implementation, best first."""
    cells = doc["cells"]
    impls = {i["name"]: i for i in doc["impls"]}
    names = [i["name"] for i in doc["impls"] if any(c["impl"] == i["name"] for c in cells)]

    def badness(name: str) -> tuple[int, int, int, str]:
        """Concerns not met, then wrong results, then other non-passes."""
        row = [c for c in cells if c["impl"] == name]
        bad = [c for c in row if c["status"] not in OK + ("skip",)]
        serious = [c for c in bad if not precision_only(c)]
        concerns = sum(any(_matches(c["check"], pats) for c in serious) for _, _, pats in CONCERNS)
        return (concerns, sum(c["status"] == "fail" for c in serious), len(bad), name)

    names.sort(key=badness)
    sizes = next((i["latency"].get("sizes") for i in impls.values() if i.get("latency")), None)
    speed_head = (f"fwd+bwd float32 at {' · '.join(sizes)}: eager / compiled" if sizes
                  else "fwd+bwd ÷ floor")
    header = ["impl", speed_head] + [c[0] for c in CONCERNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        row = [c for c in cells if c["impl"] == name]
        lat = impls[name].get("latency") or {}
        if sizes:
            ratio = speed_text(lat.get("fwdbwd_s"))
        else:
            value = lat.get("ratio_floor")
            ratio = "-" if value is None else f"×{value:.2f}"
        entries = [_entry([c for c in row if _matches(c["check"], pats)]) for _, _, pats in CONCERNS]
        lines.append(f"| `{name}` ({impls[name].get('kind', '')}) | {ratio} | "
                     + " | ".join(entries) + " |")
    clean = [n for n in names if not any(c["status"] not in OK + ("skip",)
                                         for c in cells if c["impl"] == n)]
    legend = "; ".join(f"**{c}**: {why}" for c, why, _ in CONCERNS)
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
