"""Picture of the train area: the two-moons DANN with and without adaptation.

    python -m grl_conformance.bench.train_plot [-o reports/dann-moons.png] [--impl NAME] [--seed N]

Left: the network trained through a correct GRL (alpha 6); right: the baseline whose domain
head sees detached features (no adaptation). Both panels show the labelled source points
(filled), the rotated target points (hollow, coloured by their true label, which training never
sees) and the label head's decision boundary from the weights averaged over the last 500 steps.
matplotlib is optional: without it no picture is drawn and a message says so (exit status 0).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from grl_conformance.checks import dann

DEFAULT_OUT = Path("reports") / "dann-moons.png"


def _grl_for(name: str | None):
    """The GRL module drawn on the left: the harness's textbook GRL, or a registry row."""
    if name is None:
        from grl_conformance.core.reference import ReferenceGRL

        return ReferenceGRL(dann.ALPHA), "textbook GRL (grl_conformance.core.reference.ReferenceGRL)"
    from grl_conformance.core import registry

    entries = registry.collect(only=[name])
    return entries[0].api.layer(alpha=dann.ALPHA), f"{name}"


def _boundary(result: dann.Result, seed_index: int, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    probe = dann.BatchedDANN(result.seeds, None)
    probe.load_state_dict(result.averaged, strict=False)
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(torch.float32)
    grid = grid.unsqueeze(0).expand(len(result.seeds), -1, -1).contiguous()
    with torch.no_grad():
        logits = probe.label_logits(probe.features(grid))[seed_index]
    return logits.reshape(xx.shape)


def draw(out: Path = DEFAULT_OUT, impl: str | None = None, seed: int = 0) -> Path | None:
    """Train both networks on `seed` and write the picture; None (and a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("grl_conformance.bench.train_plot: matplotlib is not installed, no picture drawn "
              "(pip install matplotlib, or the [plot] extra)", file=sys.stderr)
        return None
    grl, label = _grl_for(impl)
    seeds = (seed,)
    adapted = dann.train(grl, seeds)
    base = dann.train(None, seeds)
    data = dann.make_data(seeds)
    xs, ys, xt, yt = data.xs[0], data.ys[0], data.xt[0], data.yt[0]
    pts = torch.cat([xs, xt])
    lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
    xx, yy = torch.meshgrid(torch.linspace(float(lo[0]), float(hi[0]), 300),
                            torch.linspace(float(lo[1]), float(hi[1]), 300), indexing="xy")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    panels = [(adapted, f"DANN through {label}, alpha {dann.ALPHA:g}"),
              (base, "baseline: domain head fed features.detach()")]
    colours = ("tab:blue", "tab:red")
    for ax, (result, title) in zip(axes, panels, strict=True):
        z = _boundary(result, 0, xx, yy)
        ax.contourf(xx, yy, (z > 0).float(), levels=[-0.5, 0.5, 1.5], colors=colours, alpha=0.12)
        ax.contour(xx, yy, z, levels=[0.0], colors="k", linewidths=1.5)
        for cls in (0, 1):
            s, t = xs[ys == cls], xt[yt == cls]
            ax.scatter(s[:, 0], s[:, 1], s=12, c=colours[cls], label=f"source, class {cls}")
            ax.scatter(t[:, 0], t[:, 1], s=16, facecolors="none", edgecolors=colours[cls],
                       linewidths=0.8, label=f"target (rotated {dann.ROTATION_DEG:g} deg), class {cls}")
        ax.set_title(f"{title}\nsource acc {result.source_acc[0]:.3f}, target acc "
                     f"{result.target_acc[0]:.3f}, domain head {result.domain_acc[0]:.3f}", fontsize=10)
        ax.set_aspect("equal")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"Two moons, seed {seed}: {dann.STEPS} full-batch Adam steps, hidden layer of "
                 f"{dann.HIDDEN} sigmoid units; black line = label decision boundary", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grl_conformance.bench.train_plot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help=f"PNG to write (default {DEFAULT_OUT})")
    parser.add_argument("--impl", default=None, help="registry row to train through (default: the textbook GRL)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's data and weights to draw (default 0)")
    args = parser.parse_args(argv)
    path = draw(args.out, args.impl, args.seed)
    if path is not None:
        print(f"picture written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
