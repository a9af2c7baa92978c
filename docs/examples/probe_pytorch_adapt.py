"""pytorch-adapt 0.0.83's DANN (`pytorch_adapt.hooks.DANNHook`) under the reversal probe.

The setup is the library's own: models G (trunk), C (label head), D (domain head) handed to a
`DANNHook`, which reverses G's features with its `GradientReversal` layer before D and sums
the losses with its `MeanWeighter`. `losses` runs the hook's loss chain without its optimizer
step (the probe must not train), and `total` is the hook's own weighted objective.

- `make_spec`: as the library ships it, no schedule (alpha 1 throughout).
- `make_spec_scheduled`: the DANN schedule applied through the layer's public
  `update_weight`, with `DANNHook`'s default `gradient_reversal_weight=1`.
- `make_spec_scheduled_float_weight`: the same with `gradient_reversal_weight=1.0`.

    cd docs/examples && grl-harness probe probe_pytorch_adapt:make_spec --out ../../reports/probe

Needs pytorch-adapt with the light dependencies its hooks import (`make peers`).
"""
import math

import torch
from pytorch_adapt.hooks import DANNHook
from pytorch_adapt.layers import GradientReversal
from torch import nn

FEATURES, CLASSES, BATCH = 16, 3, 32


def dann_schedule(p):
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def _find(obj, kind, seen=None):
    """The first `kind` instance among a hook's attributes (hooks are not nn.Modules)."""
    seen = set() if seen is None else seen
    if isinstance(obj, kind):
        return obj
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return None
    seen.add(id(obj))
    for value in vars(obj).values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            found = _find(item, kind, seen)
            if found is not None:
                return found
    return None


def _spec(scheduled=False, **hook_options):
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(8, FEATURES), nn.ReLU())
    C = nn.Linear(FEATURES, CLASSES)
    D = nn.Sequential(nn.Linear(FEATURES, FEATURES), nn.ReLU(), nn.Linear(FEATURES, 1), nn.Flatten(0))
    models = nn.ModuleDict({"G": G, "C": C, "D": D})
    opt = torch.optim.Adam(models.parameters(), lr=1e-3)
    hook = DANNHook(opts=[opt], **hook_options)
    optimizer_hook = hook.hook.hooks[0]  # OptimizerHook(loss chain, opts, weighter, reducer)
    g = torch.Generator().manual_seed(1)
    batch = {
        "src_imgs": torch.randn(BATCH, 8, generator=g),
        "src_labels": torch.randint(0, CLASSES, (BATCH,), generator=g),
        "target_imgs": torch.randn(BATCH, 8, generator=g) + 0.5,
        "src_domain": torch.zeros(BATCH),
        "target_domain": torch.ones(BATCH),
    }

    def losses(model, batch):
        inputs = {**batch, "G": model["G"], "C": model["C"], "D": model["D"]}
        outputs, parts = optimizer_hook.hook(inputs, {})
        _, parts = optimizer_hook.reducer({**inputs, **outputs}, parts)
        total, _ = optimizer_hook.weighter(parts)
        return {"domain": parts["src_domain_loss"] + parts["target_domain_loss"],
                "label": parts["src_c_loss"], "total": total}

    spec = {"model": models, "batch": batch, "losses": losses, "trunk": "G", "domain_head": "D",
            "label_head": "C", "optimizer": opt}
    if scheduled:
        grl = _find(hook, GradientReversal)
        spec["set_progress"] = lambda p: grl.update_weight(dann_schedule(p))
        spec["alpha"] = dann_schedule
    return spec


def make_spec():
    return _spec()


def make_spec_scheduled():
    return _spec(scheduled=True)


def make_spec_scheduled_float_weight():
    return _spec(scheduled=True, gradient_reversal_weight=1.0)
