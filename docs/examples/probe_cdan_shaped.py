"""A CDAN-shaped setup (conditional adversarial domain adaptation), under the reversal probe.

CDAN conditions the discriminator on the classifier's predictions by a multilinear map: its
input is the outer product of the softmax predictions (detached) and the features, flattened,
`bmm(g.unsqueeze(2), f.unsqueeze(1)).view(batch, -1)`, and the GRL stands after the map, in
front of the discriminator (an MLP ending in a sigmoid, trained with BCE), as in tllib's
`ConditionalDomainAdversarialLoss`. The discriminator's input is therefore not the trunk's
output: the probe cannot pair them element by element and measures the reversal by finite
differences. `set_progress` puts the DANN schedule into the GRL. (Written here in that shape,
not copied.)

- `make_spec_cdan`: as CDAN wires it.

    cd docs/examples && grl-harness probe probe_cdan_shaped:make_spec_cdan --out ../../reports/probe
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

INPUTS, FEATURES, CLASSES, BATCH = 8, 16, 3, 32


class GradientReverseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x * 1.0

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg() * ctx.coeff, None


class GradientReverseLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.coeff = 1.0

    def forward(self, x):
        return GradientReverseFunction.apply(x, self.coeff)


class MultiLinearMap(nn.Module):
    """f (N x F), g (N x C) -> the flattened outer products, N x (C F)."""

    def forward(self, f, g):
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).view(f.size(0), -1)


class ConditionalAdversarialLoss(nn.Module):
    def __init__(self, discriminator):
        super().__init__()
        self.grl = GradientReverseLayer()
        self.map = MultiLinearMap()
        self.discriminator = discriminator

    def forward(self, g_s, f_s, g_t, f_t):
        f = torch.cat((f_s, f_t), dim=0)
        g = F.softmax(torch.cat((g_s, g_t), dim=0), dim=1).detach()
        d = self.discriminator(self.grl(self.map(f, g)))
        d_label = torch.cat((torch.ones(g_s.size(0), 1), torch.zeros(g_t.size(0), 1)))
        return F.binary_cross_entropy(d, d_label)


class Classifier(nn.Module):
    """backbone -> bottleneck -> head; returns (predictions, features)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(INPUTS, FEATURES), nn.ReLU())
        self.bottleneck = nn.Sequential(nn.Linear(FEATURES, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        f = self.bottleneck(self.backbone(x))
        return self.head(f), f


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.classifier = Classifier()
        discriminator = nn.Sequential(nn.Linear(FEATURES * CLASSES, 16), nn.BatchNorm1d(16),
                                      nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
        self.domain_adv = ConditionalAdversarialLoss(discriminator)


def dann_alpha(p):
    return 2.0 / (1.0 + math.exp(-10 * p)) - 1.0


def make_spec_cdan():
    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(BATCH, INPUTS, generator=g),
             torch.randint(0, CLASSES, (BATCH,), generator=g),
             torch.randn(BATCH, INPUTS, generator=g) + 0.5)

    def losses(model, batch):
        x_s, labels_s, x_t = batch
        y, f = model.classifier(torch.cat((x_s, x_t), dim=0))
        y_s, y_t = y.chunk(2, dim=0)
        f_s, f_t = f.chunk(2, dim=0)
        return {"label": F.cross_entropy(y_s, labels_s),
                "domain": model.domain_adv(y_s, f_s, y_t, f_t)}

    def set_progress(p):
        model.domain_adv.grl.coeff = dann_alpha(p)

    return {"model": model, "batch": batch, "losses": losses, "trunk": "classifier.bottleneck",
            "domain_head": "domain_adv.discriminator", "label_head": "classifier.head",
            "optimizer": opt, "set_progress": set_progress, "alpha": dann_alpha}
