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
    ("probe_domainbed_shaped:make_spec",
     "DomainBed-shaped DANN: no GRL, `gen_loss = classifier_loss - lambda * disc_loss`, "
     "gradient penalty, `[gen_opt, disc_opt]`"),
    ("probe_domainbed_shaped:make_spec_sign_flipped",
     "the same, `+ lambda * disc_loss`: the featurizer helps the discriminator"),
    ("probe_domainbed_shaped:make_spec_one_optimizer_missing_disc",
     "the same, only `gen_opt` given: the discriminator never stepped"),
    ("probe_dassl_shaped:make_spec",
     "Dassl-shaped DANN trainer: critic outside the model with `optim_c`, `ReverseGrad` per "
     "domain, lmda from the trainer's step counter"),
    ("probe_dassl_shaped:make_spec_critic_optimizer_forgotten",
     "the same, only the model's `optim` given: the critic never stepped"),
    ("probe_cdan_shaped:make_spec_cdan",
     "CDAN-shaped: the GRL after the multilinear map (softmax x features) in front of the "
     "discriminator"),
]


def run(ref: str, compile: bool, out: Path) -> dict:
    cmd = [sys.executable, "-m", "grl_conformance.cli", "probe", ref, "--out", str(out)]
    done = subprocess.run(cmd + (["--compile"] if compile else []), cwd=HERE, capture_output=True,
                          text=True, timeout=900)
    said = [line for line in done.stderr.splitlines() if line.startswith("grl-harness probe: ")]
    return {"spec": ref, "exit": done.returncode, "error": said[-1] if said else ""}


def _said(verdicts: list[dict]) -> str:
    """`every check passes`, `fails reach, schedule`, `could not run reach (error)`."""
    failing = [v["check"] for v in verdicts if v["status"] == "fail"]
    errored = [v["check"] for v in verdicts if v["status"] == "error"]
    parts = ([f"fails {', '.join(failing)}"] if failing else []) + (
        [f"could not run {', '.join(errored)} (error)"] if errored else [])
    return "; ".join(parts) or "every check passes"


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
        compiled = "-"
        if found:
            doc = json.loads((args.out / f"{stem}.json").read_text())
            said = f"[{_said(doc['runs']['eager'])}]({stem}.md)"
            if "compiled" in doc["runs"]:
                compiled = (_said(doc["runs"]["compiled"]) + "; "
                            + doc.get("compile", {}).get("line", ""))
        else:
            said = result["error"].replace("grl-harness probe: ", "")
        rows.append(f"| `{ref}` | {what} | {result['exit']} | {said} | {compiled} |")
    index = ["# The reversal probe on published DANN setups", "",
             "Written by `make probe-examples` (`docs/examples/run_probes.py`); what each finding "
             "means: [docs/probe.md](../../docs/probe.md#on-published-code). The exit status is the "
             "whole probe's (eager and `--compile`).", "",
             "| spec (docs/examples/) | setup | exit | eager | under torch.compile |",
             "| --- | --- | --- | --- | --- |", *rows, ""]
    (args.out / "README.md").write_text("\n".join(index), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
