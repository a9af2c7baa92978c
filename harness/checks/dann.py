"""The two-moons DANN of Ganin et al. (JMLR 2016, sec. 5.1.1), seeds batched into one model.

Source: two interleaving moons (150 points each, the `sklearn.datasets.make_moons` formulas,
Gaussian noise 0.05), labelled. Target: a fresh sample of the same kind rotated by 35 degrees
(counter-clockwise) about the source mean, unlabelled during training (its labels only score the
model). Both are centred by the source mean and multiplied by 2.

Network: one hidden layer of 15 sigmoid units shared by a label head (logistic) and a domain
head (logistic) that sees the features through the GRL under test. Every seed has its own data
and initial weights; the seeds are stacked along a leading dimension (weights `[S, in, out]`,
`torch.baddbmm`), and the GRL is applied once to the stacked features tensor (a GRL is
elementwise, so that is the same as one GRL per seed). The loss is the sum over seeds of each
seed's mean loss, and Adam is elementwise, so each seed trains exactly as it would alone.

The baseline ("no adaptation") is the same network whose domain head sees `features.detach()`:
the domain head still trains, but the features never hear from it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

N_PER_MOON = 150
NOISE = 0.05
ROTATION_DEG = 35.0
SCALE = 2.0
HIDDEN = 15
ALPHA = 6.0
LR = 0.01
STEPS = 2000
AVERAGE_LAST = 500
SEEDS = (0, 1, 2, 3, 4)

# Pass criteria (docs/train.md gives the evidence behind each number).
MIN_SOURCE_ACC = 0.95   # per seed: the label head still learns the source task
MAX_DOMAIN_ACC = 0.78   # per seed: the domain head cannot tell source from target features
MIN_TARGET_ACC = 0.70   # per seed: no seed collapses on the target
MIN_MEAN_TARGET_ACC = 0.85  # over the seeds: adaptation beats the baseline (about 0.76)


def make_moons(n_per_moon: int, noise: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`sklearn.datasets.make_moons(2 * n_per_moon, noise=noise)` without sklearn (no shuffle)."""
    t = torch.linspace(0, math.pi, n_per_moon, dtype=torch.float64)
    outer = torch.stack([torch.cos(t), torch.sin(t)], 1)
    inner = torch.stack([1 - torch.cos(t), 1 - torch.sin(t) - 0.5], 1)
    x = torch.cat([outer, inner]) + noise * torch.randn(2 * n_per_moon, 2, generator=gen,
                                                        dtype=torch.float64)
    y = torch.cat([torch.zeros(n_per_moon), torch.ones(n_per_moon)])
    return x, y


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    r = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=x.dtype)
    return x @ r  # row vectors: counter-clockwise rotation about the origin


@dataclass
class Data:
    xs: torch.Tensor  # [S, 2n, 2] source points
    ys: torch.Tensor  # [S, 2n] source labels
    xt: torch.Tensor  # [S, 2n, 2] target points
    yt: torch.Tensor  # [S, 2n] target labels (scoring only)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(20160 + seed)


def make_data(seeds: Sequence[int], dtype: torch.dtype = torch.float32) -> Data:
    xs, ys, xt, yt = [], [], [], []
    for seed in seeds:
        gen = _generator(seed)
        s, sy = make_moons(N_PER_MOON, NOISE, gen)
        t, ty = make_moons(N_PER_MOON, NOISE, gen)
        mean = s.mean(0)
        t = rotate(t - mean, ROTATION_DEG) + mean
        xs.append((s - mean) * SCALE)
        xt.append((t - mean) * SCALE)
        ys.append(sy)
        yt.append(ty)
    return Data(torch.stack(xs).to(dtype), torch.stack(ys).to(dtype),
                torch.stack(xt).to(dtype), torch.stack(yt).to(dtype))


def _uniform(gen: torch.Generator, shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


class BatchedDANN(nn.Module):
    """S independent shallow DANNs; `grl` is a module applied to the stacked features, or None
    for the baseline (`features.detach()` into the domain head)."""

    def __init__(self, seeds: Sequence[int], grl: nn.Module | None, hidden: int = HIDDEN,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        shapes = {"w1": (2, hidden), "b1": (1, hidden), "wy": (hidden, 1), "by": (1, 1),
                  "wd": (hidden, 1), "bd": (1, 1)}
        fan_in = {"w1": 2, "b1": 2, "wy": hidden, "by": hidden, "wd": hidden, "bd": hidden}
        init = {k: [] for k in shapes}
        for seed in seeds:
            gen = _generator(seed)
            gen.manual_seed(gen.initial_seed() + 7919)  # weights: a stream apart from the data's
            for k, shape in shapes.items():
                init[k].append(_uniform(gen, shape, fan_in[k]))
        for k in shapes:
            setattr(self, k, nn.Parameter(torch.stack(init[k]).to(dtype)))
        self.grl = grl

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.baddbmm(self.b1, x, self.w1))

    def label_logits(self, f: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.by, f, self.wy).squeeze(-1)

    def domain_logits(self, f: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bd, f, self.wd).squeeze(-1)

    def forward(self, xs: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(torch.cat([xs, xt], 1))
        y = self.label_logits(f[:, : xs.shape[1]])
        d = self.domain_logits(self.grl(f) if self.grl is not None else f.detach())
        return y, d


def dann_loss(y: torch.Tensor, d: torch.Tensor, ys: torch.Tensor, dom: torch.Tensor) -> torch.Tensor:
    """Sum over seeds of (source label BCE + domain BCE), each a mean over that seed's points."""
    label = F.binary_cross_entropy_with_logits(y, ys, reduction="none").mean(1)
    domain = F.binary_cross_entropy_with_logits(d, dom, reduction="none").mean(1)
    return (label + domain).sum()


@dataclass
class Result:
    seeds: tuple[int, ...]
    source_acc: list[float]  # per seed, averaged weights
    target_acc: list[float]  # per seed, averaged weights
    domain_acc: list[float]  # per seed, last weights, over source + target points
    steps: int
    averaged: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    compile_s: float = 0.0  # time of the first (compiling) step, compiled runs only

    @staticmethod
    def _mean(v: list[float]) -> float:
        return sum(v) / len(v)

    @property
    def mean_source(self) -> float:
        return self._mean(self.source_acc)

    @property
    def mean_target(self) -> float:
        return self._mean(self.target_acc)

    @property
    def mean_domain(self) -> float:
        return self._mean(self.domain_acc)

    def failures(self) -> list[str]:
        """Which pass criteria are not met (empty: adapted), compactly."""
        out = []
        n = len(self.seeds)
        for name, values, bad, limit in (
                ("source acc <", self.source_acc, lambda a: a < MIN_SOURCE_ACC, MIN_SOURCE_ACC),
                ("domain-head acc >", self.domain_acc, lambda a: a > MAX_DOMAIN_ACC, MAX_DOMAIN_ACC),
                ("target acc <", self.target_acc, lambda a: a < MIN_TARGET_ACC, MIN_TARGET_ACC)):
            hits = [a for a in values if bad(a)]
            if hits:
                worst = min(hits) if "<" in name else max(hits)
                out.append(f"{name} {limit} on {len(hits)}/{n} seeds (worst {worst:.3f})")
        if self.mean_target < MIN_MEAN_TARGET_ACC:
            out.append(f"mean target acc {self.mean_target:.3f} < {MIN_MEAN_TARGET_ACC}")
        return out

    def summary_line(self) -> str:
        """Mean and worst seed of each accuracy."""
        seeds = (f"{self.seeds[0]}-{self.seeds[-1]}" if self.seeds == tuple(range(self.seeds[0], self.seeds[-1] + 1))
                 else ",".join(map(str, self.seeds)))
        return (f"acc mean/worst over seeds {seeds}: "
                f"source {self.mean_source:.3f}/{min(self.source_acc):.3f}, "
                f"target {self.mean_target:.3f}/{min(self.target_acc):.3f}, "
                f"domain head {self.mean_domain:.3f}/{max(self.domain_acc):.3f}")


@contextmanager
def single_thread():
    """One intra-op thread while training: same result on every run, and fair to xdist workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return ((logits > 0).to(labels.dtype) == labels).to(torch.float64).mean(1).tolist()


def train(grl: nn.Module | None, seeds: Sequence[int] = SEEDS, steps: int = STEPS,
          average_last: int = AVERAGE_LAST, compile_backend: str | Callable | None = None,
          dtype: torch.dtype = torch.float32,
          after_first_step: Callable[[], None] | None = None) -> Result:
    """Train S seeds at once, full batch, Adam; score as in the module docstring.

    compile_backend: if given, the forward pass and the loss (and through AOTAutograd their
    backward) are compiled once with `torch.compile(..., backend=compile_backend)`; the
    optimizer step stays eager. `after_first_step` is called once after step 0 (e.g. to count
    the graphs compiled so far, so later recompiles can be told apart).
    """
    import time

    seeds = tuple(seeds)
    data = make_data(seeds, dtype)
    n_s, n_t = data.xs.shape[1], data.xt.shape[1]
    dom = torch.cat([torch.zeros(len(seeds), n_s, dtype=dtype), torch.ones(len(seeds), n_t, dtype=dtype)], 1)
    with single_thread():
        model = BatchedDANN(seeds, grl, dtype=dtype)
        params = dict(model.named_parameters())
        opt = torch.optim.Adam(params.values(), lr=LR, foreach=True)

        def step_loss(xs, xt, ys, dom):
            y, d = model(xs, xt)
            return dann_loss(y, d, ys, dom)

        run = torch.compile(step_loss, backend=compile_backend) if compile_backend else step_loss
        sums = {k: torch.zeros_like(p) for k, p in params.items()}
        compile_s = 0.0
        for step in range(steps):
            t0 = time.perf_counter() if step == 0 else 0.0
            opt.zero_grad(set_to_none=True)
            run(data.xs, data.xt, data.ys, dom).backward()
            opt.step()
            if step == 0:
                compile_s = time.perf_counter() - t0 if compile_backend else 0.0
                if after_first_step is not None:
                    after_first_step()
            if step >= steps - average_last:
                with torch.no_grad():
                    torch._foreach_add_(list(sums.values()), list(params.values()))
        with torch.no_grad():
            f_last = model.features(torch.cat([data.xs, data.xt], 1))
            domain_acc = _accuracy(model.domain_logits(f_last), dom)
            averaged = {k: v / average_last for k, v in sums.items()}
            probe = BatchedDANN(seeds, None, dtype=dtype)
            probe.load_state_dict(averaged, strict=False)
            source_acc = _accuracy(probe.label_logits(probe.features(data.xs)), data.ys)
            target_acc = _accuracy(probe.label_logits(probe.features(data.xt)), data.yt)
    return Result(seeds, source_acc, target_acc, domain_acc, steps, averaged, compile_s)


@lru_cache(maxsize=4)
def baseline(seeds: tuple[int, ...] = SEEDS, steps: int = STEPS) -> Result:
    """The no-adaptation network (detached features into the domain head); same for every row.

    Every row's sandboxed process needs it for its detail; it is deterministic, so it is kept on
    disk per torch and per version of this file (~3 s saved per row).
    """
    import hashlib
    import json
    import os
    from pathlib import Path

    key = hashlib.sha256(Path(__file__).read_bytes() + repr((seeds, steps)).encode()).hexdigest()[:16]
    root = Path(os.environ.get("GRL_CACHE_DIR") or Path.home() / ".cache" / "grl-conformance")
    path = root / "dann" / f"baseline-torch-{torch.__version__}-{key}.json"
    try:
        data = json.loads(path.read_text())
        return Result(tuple(data["seeds"]), data["source_acc"], data["target_acc"],
                      data["domain_acc"], data["steps"])
    except (OSError, ValueError, KeyError):
        pass
    result = train(None, seeds, steps)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"seeds": list(result.seeds), "source_acc": result.source_acc,
                                   "target_acc": result.target_acc,
                                   "domain_acc": result.domain_acc, "steps": result.steps}))
        tmp.replace(path)
    except OSError:
        pass  # no cache: computed again next time
    return result


# --- evidence: `python -m grl_conformance.checks.dann --seeds 100` -----------------------------------------

def _variants(extra_refs: Sequence[str] = ()) -> dict[str, Callable[[], nn.Module | None]]:
    """What the sweep trains: a correct GRL, the baseline, and any `--grl-impl` rows (e.g. the
    train mutants, `tests.selftest.mutation:train_identity_backward`: the product never imports
    its tests itself)."""
    from grl_conformance.core.reference import ReferenceGRL
    from grl_conformance.core.registry import resolve

    out: dict[str, Callable[[], nn.Module | None]] = {
        "correct": lambda: ReferenceGRL(ALPHA),
        "baseline": lambda: None,
        "correct_alpha1": lambda: ReferenceGRL(1.0),
    }
    for ref in extra_refs:
        impl = resolve(ref)
        out[impl.name] = (lambda impl=impl: impl.api.layer(alpha=ALPHA))
    return out


def sweep(n_seeds: int, steps: int, names: Sequence[str] | None, compile_backend: str | None,
          extra_refs: Sequence[str] = ()) -> list[str]:
    """Per variant: mean/worst of each accuracy over n_seeds seeds, how many seeds break each
    per-seed criterion, and how many disjoint 5-seed groups the cell would fail."""
    import time

    variants = _variants(extra_refs)
    lines = []
    seeds = tuple(range(n_seeds))
    for name in names or list(variants):
        if compile_backend:
            torch._dynamo.reset()
        start = time.perf_counter()
        r = train(variants[name](), seeds, steps, average_last=min(AVERAGE_LAST, steps // 4),
                  compile_backend=compile_backend)
        took = time.perf_counter() - start
        groups = [Result(seeds[i:i + 5], r.source_acc[i:i + 5], r.target_acc[i:i + 5],
                         r.domain_acc[i:i + 5], steps) for i in range(0, n_seeds - n_seeds % 5, 5)]
        failing = sum(bool(g.failures()) for g in groups)
        breaking_any = sum(a < MIN_SOURCE_ACC or c > MAX_DOMAIN_ACC or b < MIN_TARGET_ACC for a, b, c
                           in zip(r.source_acc, r.target_acc, r.domain_acc, strict=True))
        lines.append(
            f"{name:24s} source {r.mean_source:.3f}/{min(r.source_acc):.3f}  "
            f"target {r.mean_target:.3f}/{min(r.target_acc):.3f}/{max(r.target_acc):.3f}  "
            f"domain {r.mean_domain:.3f}/{max(r.domain_acc):.3f}  seeds breaking "
            f"src/dom/tgt/any {sum(a < MIN_SOURCE_ACC for a in r.source_acc)}/"
            f"{sum(a > MAX_DOMAIN_ACC for a in r.domain_acc)}/"
            f"{sum(a < MIN_TARGET_ACC for a in r.target_acc)}/"
            f"{breaking_any}  "
            f"5-seed cells failing {failing}/{len(groups)}  ({took:.1f} s)")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m grl_conformance.checks.dann",
        description="Evidence for the train criteria: train correct, baseline and mutant GRLs on "
                    "many seeds. Columns: mean/worst source acc, mean/worst/best target acc, "
                    "mean/worst domain-head acc.")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--compile", default=None, metavar="BACKEND", help="e.g. inductor")
    parser.add_argument("--grl-impl", action="append", default=[], metavar="MODULE:ATTR",
                        help="also train this row (repeatable), e.g. "
                             "tests.selftest.mutation:train_identity_backward")
    args = parser.parse_args(argv)
    print(f"{args.seeds} seeds, {args.steps} steps, alpha {ALPHA}, "
          f"{'compiled with ' + args.compile if args.compile else 'eager'}; torch {torch.__version__}")
    sweep(args.seeds, args.steps, args.only.split(",") if args.only else None, args.compile,
          args.grl_impl)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
