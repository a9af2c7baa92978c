"""Run the reversal probe on every example here, as a user would (`grl-harness probe` from this
folder), and write reports/probe/: each probe's Markdown and JSON, and an index with each exit
status. `make probe-examples`; `--no-compile` for the eager probe only.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "reports" / "probe"
# (spec, what it stands for)
EXAMPLES = [
    ("probe_pytorch_adapt:make_spec", "pytorch-adapt `DANNHook`, as shipped (constant alpha 1)"),
    ("probe_pytorch_adapt:make_spec_scheduled",
     "pytorch-adapt `DANNHook`, DANN schedule through `GradientReversal.update_weight`"),
    ("probe_pytorch_adapt:make_spec_scheduled_float_weight",
     "the same with `DANNHook(gradient_reversal_weight=1.0)`"),
    ("probe_dalib:make_spec", "dalib `DomainAdversarialLoss`, as shipped (`auto_step=True`)"),
    ("probe_dalib:make_spec_numpy_shim", "the same with `numpy.float = float`"),
    ("probe_dalib:make_spec_no_auto_step",
     "dalib `WarmStartGradientReverseLayer(auto_step=False)`, `step()` never called"),
    ("probe_fungtion_shaped:make_spec", "fungtion/DANN-shaped `forward(x, alpha)`"),
    ("probe_fungtion_shaped:make_spec_alpha_not_passed", "the same, the loop's alpha not passed"),
]


def run(ref: str, compile: bool, out: Path) -> dict:
    cmd = [sys.executable, "-m", "grl_conformance.cli", "probe", ref, "--out", str(out)]
    done = subprocess.run(cmd + (["--compile"] if compile else []), cwd=HERE, capture_output=True,
                          text=True, timeout=900)
    said = [line for line in done.stderr.splitlines() if line.startswith("grl-harness probe: ")]
    return {"spec": ref, "exit": done.returncode, "error": said[-1] if said else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref, what in EXAMPLES:
        result = run(ref, not args.no_compile, args.out)
        print(f"{ref}: exit {result['exit']} {result['error']}", flush=True)
        stem = "probe-" + ref.replace(":", "-")
        found = (args.out / f"{stem}.json").exists() and result["exit"] != 2
        if found:
            doc = json.loads((args.out / f"{stem}.json").read_text())
            failing = sorted({v["check"] for run_ in doc["runs"].values() for v in run_
                              if v["status"] in ("fail", "error")})
            said = ("every check passes" if not failing else "fails " + ", ".join(failing))
            said = f"[{said}]({stem}.md)"
        else:
            said = result["error"].replace("grl-harness probe: ", "")
        rows.append(f"| `{ref}` | {what} | {result['exit']} | {said} |")
    index = ["# The reversal probe on published DANN setups", "",
             "Written by `make probe-examples` (`docs/examples/run_probes.py`); what each finding "
             "means: [docs/probe.md](../../docs/probe.md#on-published-code).", "",
             "| spec (docs/examples/) | setup | exit | result |", "| --- | --- | --- | --- |", *rows, ""]
    (args.out / "README.md").write_text("\n".join(index), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
