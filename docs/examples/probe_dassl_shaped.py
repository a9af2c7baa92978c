"""A setup shaped like Dassl's DANN trainer, under the reversal probe.

The trainer's model is a `SimpleNet`: a backbone and a linear classifier, whose forward returns
`(logits, features)` when asked for the features. The critic is an MLP (linear, batch norm,
leaky ReLU) of its own, outside the model, stepped by its own optimizer `optim_c` beside the
model's `optim`. A `ReverseGrad` module wraps a reversal `autograd.Function` and is called
`revgrad(feat, grad_scaling=lmda)` on the source and the target features separately, with
`lmda = 2 / (1 + exp(-10 p)) - 1` computed in `forward_backward` from the trainer's own step
counter (`p = (batch_idx + epoch * num_batches) / (max_epoch * num_batches)`). The objective is
`loss_x + loss_d`, cross-entropy on the source labels plus the critic's BCE on both domains.
(Written here in that shape, not copied.)

- `make_spec`: as the trainer wires it.
- `make_spec_critic_optimizer_forgotten`: only `optim` given: the critic is never stepped
  (fails `optimizer`).

    cd docs/examples && grl-harness probe probe_dassl_shaped:make_spec --out ../../reports/probe
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUTS, FEATURES, CLASSES, BATCH = 8, 16, 3, 32
MAX_EPOCH, NUM_BATCHES = 10, 100


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grad_scaling):
        ctx.grad_scaling = grad_scaling
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.grad_scaling * grad_output, None


class ReverseGrad(nn.Module):
    def forward(self, x, *, grad_scaling):
        assert grad_scaling >= 0, f"grad_scaling must be non-negative, got {grad_scaling}"
        return _ReverseGrad.apply(x, grad_scaling)


class SimpleNet(nn.Module):
    """backbone -> (no head) -> classifier; `return_feature=True` also returns the features."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(INPUTS, FEATURES), nn.ReLU(),
                                      nn.Linear(FEATURES, FEATURES), nn.ReLU())
        self.head = None
        self.classifier = nn.Linear(FEATURES, CLASSES)
        self.fdim = FEATURES

    def forward(self, x, return_feature=False):
        f = self.backbone(x)
        if self.head is not None:
            f = self.head(f)
        y = self.classifier(f)
        return (y, f) if return_feature else y


def mlp_head(in_features, hidden_layers):
    layers = []
    for hidden in hidden_layers:
        layers += [nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU()]
        in_features = hidden
    return nn.Sequential(*layers)


class Trainer:
    """The parts of the trainer the DANN step uses: model, critic, their optimizers, the counter."""

    def __init__(self, critic_optimizer=True):
        torch.manual_seed(0)
        self.model = SimpleNet()
        self.optim = torch.optim.SGD(self.model.parameters(), lr=0.002, momentum=0.9)
        fdim = self.model.fdim
        self.critic = nn.Sequential(mlp_head(fdim, [fdim, fdim]), nn.Linear(fdim, 1))
        self.optim_c = (torch.optim.SGD(self.critic.parameters(), lr=0.002, momentum=0.9)
                        if critic_optimizer else None)
        self.revgrad = ReverseGrad()
        self.epoch, self.batch_idx = 0, 0
        self.max_epoch, self.num_batches = MAX_EPOCH, NUM_BATCHES

    def losses(self, batch):
        """`forward_backward` up to the backward: `loss_x + loss_d` and its parts."""
        input_x, label_x, input_u = batch
        domain_x = torch.ones(input_x.shape[0], 1)
        domain_u = torch.zeros(input_u.shape[0], 1)
        global_step = self.batch_idx + self.epoch * self.num_batches
        progress = global_step / (self.max_epoch * self.num_batches)
        lmda = 2 / (1 + np.exp(-10 * progress)) - 1
        logit_x, feat_x = self.model(input_x, return_feature=True)
        _, feat_u = self.model(input_u, return_feature=True)
        loss_x = F.cross_entropy(logit_x, label_x)
        feat_x = self.revgrad(feat_x, grad_scaling=lmda)
        feat_u = self.revgrad(feat_u, grad_scaling=lmda)
        output_xd = self.critic(feat_x)
        output_ud = self.critic(feat_u)
        loss_d = (F.binary_cross_entropy_with_logits(output_xd, domain_x)
                  + F.binary_cross_entropy_with_logits(output_ud, domain_u))
        return loss_x, loss_d


def dann_lmda(p):
    return 2.0 / (1.0 + np.exp(-10 * p)) - 1.0


def _spec(critic_optimizer=True):
    trainer = Trainer(critic_optimizer)
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(BATCH, INPUTS, generator=g),
             torch.randint(0, CLASSES, (BATCH,), generator=g),
             torch.randn(BATCH, INPUTS, generator=g) + 0.5)

    def losses(model, batch):  # `model` is the probe's container; the trainer holds its own
        loss_x, loss_d = trainer.losses(batch)
        return {"label": loss_x, "domain": loss_d}

    def set_progress(p):  # where the trainer's counter stands at progress p
        trainer.epoch, trainer.batch_idx = divmod(round(p * trainer.max_epoch * trainer.num_batches),
                                                  trainer.num_batches)

    optimizers = [trainer.optim, trainer.optim_c] if critic_optimizer else [trainer.optim]
    return {"batch": batch, "losses": losses, "trunk": trainer.model.backbone,
            "domain_head": trainer.critic, "label_head": trainer.model.classifier,
            "optimizer": optimizers, "set_progress": set_progress, "alpha": dann_lmda}


def make_spec():
    return _spec()


def make_spec_critic_optimizer_forgotten():
    return _spec(critic_optimizer=False)
