"""A model shaped like fungtion/DANN's MNIST -> MNIST-M network, under the reversal probe.

The shape many DANN repositories copy: `forward(input_data, alpha) -> (class_output,
domain_output)`, a reversal `autograd.Function` applied inside the forward with the alpha the
training loop passes on every call, the features flattened with `view` before both heads, batch
norm and dropout in the heads, log-softmax outputs with NLL losses, and the loop's
`alpha = 2 / (1 + exp(-10 p)) - 1` computed outside the model. (Written here in that shape,
not copied.)

- `make_spec`: the loop passes its alpha to the forward.
- `make_spec_alpha_not_passed`: the loop computes alpha and calls `model(x, 1.0)` (p2irc/UDA4POC#3).

    cd docs/examples && grl-harness probe probe_fungtion_shaped:make_spec --out ../../reports/probe
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class ReverseLayerF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg() * ctx.alpha, None


class CNNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature = nn.Sequential(
            nn.Conv2d(3, 64, 5), nn.BatchNorm2d(64), nn.MaxPool2d(2), nn.ReLU(True),
            nn.Conv2d(64, 50, 5), nn.BatchNorm2d(50), nn.Dropout2d(), nn.MaxPool2d(2), nn.ReLU(True))
        self.class_classifier = nn.Sequential(
            nn.Linear(50 * 4 * 4, 100), nn.BatchNorm1d(100), nn.ReLU(True), nn.Dropout(),
            nn.Linear(100, 100), nn.BatchNorm1d(100), nn.ReLU(True), nn.Linear(100, 10),
            nn.LogSoftmax(dim=1))
        self.domain_classifier = nn.Sequential(
            nn.Linear(50 * 4 * 4, 100), nn.BatchNorm1d(100), nn.ReLU(True), nn.Linear(100, 2),
            nn.LogSoftmax(dim=1))

    def forward(self, input_data, alpha):
        feature = self.feature(input_data.expand(input_data.shape[0], 3, 28, 28))
        feature = feature.view(-1, 50 * 4 * 4)
        reverse_feature = ReverseLayerF.apply(feature, alpha)
        return self.class_classifier(feature), self.domain_classifier(reverse_feature)


def dann_alpha(p):
    return 2.0 / (1.0 + math.exp(-10 * p)) - 1


def _spec(pass_alpha=True):
    torch.manual_seed(0)
    model = CNNModel()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    batch = (torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g),
             torch.rand(16, 3, 28, 28, generator=g))
    loop = {"alpha": 0.0}

    def set_progress(p):  # the loop: p = step / total steps
        loop["alpha"] = dann_alpha(p)

    def losses(model, batch):
        s_img, s_label, t_img = batch
        alpha = loop["alpha"] if pass_alpha else 1.0
        class_output, domain_s = model(s_img, alpha)
        _, domain_t = model(t_img, alpha)
        err_s_label = F.nll_loss(class_output, s_label)
        err_domain = F.nll_loss(domain_s, torch.zeros(16, dtype=torch.long)) + \
            F.nll_loss(domain_t, torch.ones(16, dtype=torch.long))
        return {"label": err_s_label, "domain": err_domain}

    return {"model": model, "batch": batch, "losses": losses, "trunk": "feature",
            "domain_head": "domain_classifier", "label_head": "class_classifier",
            "optimizer": opt, "set_progress": set_progress, "alpha": dann_alpha}


def make_spec():
    return _spec()


def make_spec_alpha_not_passed():
    return _spec(pass_alpha=False)
