"""dalib 0.2's DANN (`dalib.adaptation.dann.DomainAdversarialLoss`) under the reversal probe.

dalib's `DomainAdversarialLoss(discriminator)` holds its own `WarmStartGradientReverseLayer(
alpha=1, lo=0, hi=1, max_iters=1000, auto_step=True)`: every call advances the coefficient
`2 / (1 + exp(-i / 1000)) - 1`, i the number of calls so far. The model here is a backbone
(trunk), a classifier head and that loss (the domain head is its discriminator), trained as
dalib's examples train it: `cls_loss + transfer_loss`. `set_progress(p)` puts the layer where
a run of TOTAL_ITERS iterations would be at progress p, and anneals the learning rate as DANN does.

- `make_spec`: as shipped. dalib 0.2 computes the coefficient with `np.float`, gone since
  NumPy 1.24.
- `make_spec_numpy_shim`: the same with `numpy.float = float`, as users of dalib 0.2 on a
  current NumPy do.
- `make_spec_no_auto_step`: `WarmStartGradientReverseLayer(auto_step=False)` (tllib's default)
  with a loop that never calls `step()`.

    cd docs/examples && grl-harness probe probe_dalib:make_spec_numpy_shim --out ../../reports/probe
"""
import math

import numpy
import torch
import torch.nn.functional as F
from dalib.adaptation.dann import DomainAdversarialLoss
from dalib.modules.domain_discriminator import DomainDiscriminator
from dalib.modules.grl import WarmStartGradientReverseLayer
from torch import nn

FEATURES, CLASSES, BATCH = 16, 3, 32
TOTAL_ITERS = 20 * 1000  # 20 epochs of 1000 iterations, as in dalib's DANN example
MAX_ITERS = 1000         # the warm-start layer's N in DomainAdversarialLoss


def warm_start(p):
    """The coefficient DomainAdversarialLoss's layer reaches at progress p."""
    return 2.0 / (1.0 + math.exp(-p * TOTAL_ITERS / MAX_ITERS)) - 1.0


class Model(nn.Module):
    def __init__(self, auto_step=True):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(8, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, CLASSES)
        self.domain_adv = DomainAdversarialLoss(DomainDiscriminator(FEATURES, hidden_size=16))
        if not auto_step:
            self.domain_adv.grl = WarmStartGradientReverseLayer(alpha=1.0, lo=0.0, hi=1.0,
                                                                max_iters=MAX_ITERS, auto_step=False)


def _spec(auto_step=True):
    model = Model(auto_step)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(BATCH, 8, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g),
             torch.randn(BATCH, 8, generator=g) + 0.5)

    def losses(model, batch):
        x_s, labels_s, x_t = batch
        f_s, f_t = model.backbone(x_s), model.backbone(x_t)
        return {"label": F.cross_entropy(model.head(f_s), labels_s),
                "domain": model.domain_adv(f_s, f_t)}

    def set_progress(p):
        if auto_step:  # the layer counts its own calls: where it would be after p of the run
            model.domain_adv.grl.iter_num = round(p * TOTAL_ITERS)
        for group in opt.param_groups:  # DANN's learning-rate annealing
            group["lr"] = 0.01 / (1 + 10 * p) ** 0.75

    return {"model": model, "batch": batch, "losses": losses, "trunk": "backbone",
            "domain_head": "domain_adv.domain_discriminator", "label_head": "head",
            "optimizer": opt, "set_progress": set_progress, "alpha": warm_start}


def make_spec():
    return _spec()


def make_spec_numpy_shim():
    if not hasattr(numpy, "float"):
        numpy.float = float
    return _spec()


def make_spec_no_auto_step():
    if not hasattr(numpy, "float"):
        numpy.float = float
    return _spec(auto_step=False)
