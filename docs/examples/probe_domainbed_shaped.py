"""A setup shaped like DomainBed's DANN (`AbstractDANN`), under the reversal probe.

No GRL: the featurizer, the classifier and the discriminator are separate modules (no `model`
in the spec), and two optimizers take turns, as in a GAN. `disc_opt` steps the discriminator on
`disc_loss`: its cross-entropy at telling the domains apart from the featurizer's output of the
concatenated minibatches, plus a gradient penalty (the squared norm of the gradient of the
discriminator's softmax at the true domain with respect to its input, taken with
`create_graph=True`, times the `grad_penalty` hparam). `gen_opt` steps the featurizer and the
classifier on `gen_loss = classifier_loss + lambda * -disc_loss`: the trunk is trained against
the discriminator by the objective, not by a reversal. (Written here in that shape, not copied.)

- `make_spec`: as DomainBed wires it; the probe sees "reversed in the objective".
- `make_spec_sign_flipped`: `gen_loss = classifier_loss + lambda * disc_loss`: the featurizer
  helps the discriminator (fails `reversal`).
- `make_spec_one_optimizer_missing_disc`: only `gen_opt` given: the discriminator is never
  stepped (fails `optimizer`).

    cd docs/examples && grl-harness probe probe_domainbed_shaped:make_spec --out ../../reports/probe
"""
import torch
import torch.nn.functional as F
from torch import autograd, nn

INPUTS, FEATURES, CLASSES, DOMAINS, BATCH = 8, 16, 3, 2, 32
# DomainBed's defaults for DANN, except grad_penalty (default 0; its random search draws
# 10**U(-2, 1)): nonzero here so the penalty's double backward is in what the probe measures.
HPARAMS = {"lambda": 1.0, "grad_penalty": 0.1, "lr": 1e-3, "lr_d": 1e-3, "beta1": 0.5,
           "weight_decay": 0.0, "weight_decay_d": 0.0}


def mlp(n_in, n_out, hidden=FEATURES):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class DANNLike:
    """The algorithm's parts and optimizers, and the losses its `update` computes."""

    def __init__(self, hparams=HPARAMS, sign=-1.0):
        torch.manual_seed(0)
        self.hparams, self.sign = hparams, sign
        self.featurizer = mlp(INPUTS, FEATURES)
        self.classifier = nn.Linear(FEATURES, CLASSES)
        self.discriminator = mlp(FEATURES, DOMAINS)
        self.class_embeddings = nn.Embedding(CLASSES, FEATURES)  # used by the conditional variant
        self.disc_opt = torch.optim.Adam(
            [*self.discriminator.parameters(), *self.class_embeddings.parameters()],
            lr=hparams["lr_d"], weight_decay=hparams["weight_decay_d"], betas=(hparams["beta1"], 0.9))
        self.gen_opt = torch.optim.Adam(
            [*self.featurizer.parameters(), *self.classifier.parameters()],
            lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=(hparams["beta1"], 0.9))

    def losses(self, minibatches):
        """What one `update` computes before it backs either objective: the discriminator's
        loss (stepped by disc_opt) and the generator's (stepped by gen_opt)."""
        all_x = torch.cat([x for x, _ in minibatches])
        all_y = torch.cat([y for _, y in minibatches])
        all_z = self.featurizer(all_x)
        disc_input = all_z
        disc_out = self.discriminator(disc_input)
        disc_labels = torch.cat([torch.full((x.shape[0],), i, dtype=torch.int64)
                                 for i, (x, _) in enumerate(minibatches)])
        disc_loss = F.cross_entropy(disc_out, disc_labels)
        at_true_domain = F.softmax(disc_out, dim=1).gather(1, disc_labels[:, None]).sum()
        input_grad = autograd.grad(at_true_domain, [disc_input], create_graph=True)[0]
        grad_penalty = (input_grad ** 2).sum(dim=1).mean(dim=0)
        disc_loss = disc_loss + self.hparams["grad_penalty"] * grad_penalty
        classifier_loss = F.cross_entropy(self.classifier(all_z), all_y)
        gen_loss = classifier_loss + self.hparams["lambda"] * self.sign * disc_loss
        return disc_loss, classifier_loss, gen_loss


def minibatches():
    """Two training domains, (x, y) each, the second shifted."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, INPUTS, generator=g) + shift,
             torch.randint(0, CLASSES, (BATCH,), generator=g)) for shift in (0.0, 0.5)]


def _spec(sign=-1.0, disc_opt=True):
    algorithm = DANNLike(sign=sign)

    def losses(model, batch):  # `model` is the probe's container; the algorithm holds its own
        disc_loss, classifier_loss, gen_loss = algorithm.losses(batch)
        return {"domain": disc_loss, "label": classifier_loss, "total": gen_loss,
                "discriminator": disc_loss}

    optimizers = [algorithm.gen_opt, algorithm.disc_opt] if disc_opt else [algorithm.gen_opt]
    return {"batch": minibatches(), "losses": losses, "trunk": algorithm.featurizer,
            "domain_head": algorithm.discriminator, "label_head": algorithm.classifier,
            "optimizer": optimizers}


def make_spec():
    return _spec()


def make_spec_sign_flipped():
    return _spec(sign=1.0)


def make_spec_one_optimizer_missing_disc():
    return _spec(disc_opt=False)
