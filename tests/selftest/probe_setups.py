"""DANN setups for the reversal probe's self-tests: correctly wired ones, and one miswiring per
mistake users report, each a few lines on top of one small model.

`WIRED` and `MISWIRED` map a setup's name to (factory, the checks it must fail). A factory
returns a fresh spec dict; `MODULE:ATTR` for the command line is `tests.selftest.probe_setups:NAME`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grl_conformance.core.reference import ReferenceGRL, Reverse

BATCH = 16


def dann_schedule(p: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s alpha_p = 2 / (1 + exp(-gamma p)) - 1."""
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DANN(nn.Module):
    """Trunk (with batch norm and dropout, so the probe must restore buffers and quiet dropout),
    a label head, a domain head behind `self.grl`; source and target through the trunk apart."""

    def __init__(self, grl: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.2))
        self.label_head = nn.Linear(8, 3)
        self.domain_head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 1))
        self.grl = grl if grl is not None else ReferenceGRL(0.0)

    def features(self, xs, xt):
        return self.trunk(xs), self.trunk(xt)

    def domain(self, fs, ft):
        return self.domain_head(self.grl(torch.cat([fs, ft])))

    def forward(self, xs, xt):
        fs, ft = self.features(xs, xt)
        return self.label_head(fs), self.domain(fs, ft)


def batch():
    g = torch.Generator().manual_seed(1)
    xs, xt = torch.randn(BATCH, 4, generator=g), torch.randn(BATCH, 4, generator=g) + 0.5
    ys = torch.randint(0, 3, (BATCH,), generator=g)
    dom = torch.cat([torch.zeros(BATCH, 1), torch.ones(BATCH, 1)])
    return xs, xt, ys, dom


def losses(model, b):
    xs, xt, ys, dom = b
    y, d = model(xs, xt)
    return {"label": F.cross_entropy(y, ys), "domain": F.binary_cross_entropy_with_logits(d, dom)}


def spec_of(model: nn.Module, loss_fn=losses, set_progress="grl", **extra) -> dict:
    if set_progress == "grl":
        def set_progress(p):
            model.grl.set_alpha(dann_schedule(p))
    spec = {"model": model, "batch": batch(), "losses": loss_fn, "trunk": model.trunk,
            "domain_head": model.domain_head, "label_head": model.label_head,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
            "set_progress": set_progress}
    spec.update(extra)
    return spec


# --- correctly wired ---------------------------------------------------------------------

def correct():
    return spec_of(DANN())


def correct_with_schedule_formula():
    return spec_of(DANN(), alpha=dann_schedule)


class AsIs(torch.autograd.Function):
    """fungtion/DANN#3's worry: forward returns its input object unchanged. On current torch
    the output still gets this Function's backward: correct."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad.neg() * ctx.alpha, None


class AsIsGRL(ReferenceGRL):
    def forward(self, x):
        return AsIs.apply(x, self.alpha)


def correct_function_returns_input():
    return spec_of(DANN(AsIsGRL()))


class FungtionShaped(nn.Module):
    """fungtion/DANN's shape: `forward(x, alpha) -> (class, domain)`, alpha per call, a view
    between the trunk and both heads; the loop keeps alpha outside the model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.feature = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        self.class_classifier = nn.Sequential(nn.Linear(4 * 4 * 4, 10))
        self.domain_classifier = nn.Sequential(nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x, alpha):
        feature = self.feature(x).view(-1, 4 * 4 * 4)
        reverse_feature = Reverse.apply(feature, alpha)
        return self.class_classifier(feature), self.domain_classifier(reverse_feature)


def fungtion_shaped(pass_alpha: bool = True):
    model = FungtionShaped()
    g = torch.Generator().manual_seed(2)
    data = (torch.randn(8, 1, 6, 6, generator=g), torch.randn(8, 1, 6, 6, generator=g),
            torch.randint(0, 10, (8,), generator=g))
    state = {"alpha": 0.0}

    def set_progress(p):
        state["alpha"] = dann_schedule(p)

    def fungtion_losses(m, b):
        xs, xt, ys = b
        alpha = state["alpha"] if pass_alpha else 1.0
        y, ds = m(xs, alpha)
        _, dt = m(xt, alpha)
        domain = F.cross_entropy(ds, torch.zeros(8, dtype=torch.long)) + \
            F.cross_entropy(dt, torch.ones(8, dtype=torch.long))
        return {"label": F.cross_entropy(y, ys), "domain": domain}

    return {"model": model, "batch": data, "losses": fungtion_losses, "trunk": "feature",
            "domain_head": "domain_classifier", "label_head": "class_classifier",
            "optimizer": torch.optim.Adam(model.parameters()), "set_progress": set_progress}


def correct_fungtion_shaped():
    return fungtion_shaped()


def correct_no_options():
    """Only the required keys: the optional checks skip, saying why."""
    model = DANN(ReferenceGRL(1.0))
    return {"model": model, "batch": batch(), "losses": losses, "trunk": model.trunk,
            "domain_head": model.domain_head}


# --- miswired: one mistake each ----------------------------------------------------------

def alpha_not_passed():
    """p2irc/UDA4POC#3: the schedule computes alpha, the forward call never passes it."""
    return fungtion_shaped(pass_alpha=False)


def negative_schedule():
    """CuthbertCai/pytorch_DANN#10: gamma = -10 makes alpha negative and falling."""
    model = DANN()
    return spec_of(model, set_progress=lambda p: model.grl.set_alpha(dann_schedule(p, gamma=-10)))


class NoGRL(nn.Module):
    def set_alpha(self, alpha):
        self.alpha = alpha

    def forward(self, x):
        return x


def subtracted_domain_loss():
    """CuthbertCai/pytorch_DANN#13: no GRL; the domain loss subtracted from the objective."""
    model = DANN(NoGRL())

    def subtracted(m, b):
        out = losses(m, b)
        return {**out, "total": out["label"] - getattr(m.grl, "alpha", 1.0) * out["domain"]}

    return spec_of(model, subtracted)


class ReversedAfterHead(DANN):
    def domain(self, fs, ft):
        return self.grl(self.domain_head(torch.cat([fs, ft])))


def reversal_after_domain_head():
    """janfreyberg/pytorch-revgrad#5: the reversal after the domain classifier."""
    return spec_of(ReversedAfterHead())


class BackwardNeverCalled(NoGRL):
    """hash2430/pitchtron#3: an nn.Module with a backward() that autograd never calls."""

    alpha = 1.0

    def forward(self, x):
        return x.view_as(x)

    def backward(self, grad):  # never called
        return -self.alpha * grad


def module_backward_never_called():
    return spec_of(DANN(BackwardNeverCalled()))


class Detached(DANN):
    def domain(self, fs, ft):
        return self.domain_head(self.grl(torch.cat([fs, ft]).detach()))


def features_detached():
    """Yangyangii/DANN-pytorch#1: features detached before the discriminator."""
    return spec_of(Detached())


class NotApplied(DANN):
    def domain(self, fs, ft):
        return self.domain_head(torch.cat([fs, ft]))


def grl_not_applied():
    """zou-longkun/GAST#3: the GRL built but never applied."""
    return spec_of(NotApplied())


def critic_not_in_optimizer():
    """easezyc/deep-transfer-learning#21: the domain head's parameters never stepped."""
    model = DANN()
    spec = spec_of(model)
    spec["optimizer"] = torch.optim.SGD([*model.trunk.parameters(), *model.label_head.parameters()],
                                        lr=0.01)
    return spec


class WarmStart(nn.Module):
    """tllib's WarmStartGradientReverseLayer with auto_step=False and nobody calling step():
    the coefficient stays at lo = 0."""

    def __init__(self, lo=0.0, hi=1.0, max_iters=1000):
        super().__init__()
        self.lo, self.hi, self.max_iters, self.iter_num = lo, hi, max_iters, 0

    def forward(self, x):
        coeff = 2.0 * (self.hi - self.lo) / (1.0 + math.exp(-self.iter_num / self.max_iters)) \
            - (self.hi - self.lo) + self.lo
        return Reverse.apply(x, coeff)


def warm_start_never_steps():
    return spec_of(DANN(WarmStart()), set_progress=lambda p: None)


class HookOnSharedFeatures(DANN):
    """The GRL as a hook on the trunk's output: it reverses the label head's gradient too."""

    def features(self, xs, xt):
        fs, ft = super().features(xs, xt)
        alpha = self.grl.alpha
        for f in (fs, ft):
            f.register_hook(lambda g: -alpha * g)
        return fs, ft

    def domain(self, fs, ft):
        return self.domain_head(torch.cat([fs, ft]))


def hook_on_shared_features():
    return spec_of(HookOnSharedFeatures())


def domain_loss_not_in_total():
    """The objective the user steps leaves the domain loss out."""
    def label_only(m, b):
        out = losses(m, b)
        return {**out, "total": out["label"]}

    return spec_of(DANN(), label_only)


def schedule_formula_differs():
    """The spec states its schedule; the loop applies another (gamma 5 instead of 10)."""
    model = DANN()
    return spec_of(model, set_progress=lambda p: model.grl.set_alpha(dann_schedule(p, gamma=5)),
                   alpha=dann_schedule)


class NoGradTrunk(DANN):
    def features(self, xs, xt):
        with torch.no_grad():
            return super().features(xs, xt)


def trunk_under_no_grad():
    """The trunk run under no_grad: its parameters never get a gradient (a frozen trunk, whose
    parameters do not require grad, is fine: `correct_frozen_trunk`)."""
    return spec_of(NoGradTrunk())


def correct_frozen_trunk():
    spec = spec_of(DANN())
    for p in spec["model"].trunk.parameters():
        p.requires_grad_(False)
    spec["optimizer"] = torch.optim.SGD([*spec["model"].label_head.parameters(),
                                         *spec["model"].domain_head.parameters()], lr=0.01)
    return spec


class GRLInsideHead(DANN):
    """pytorch-revgrad's README layout: the reversal is the domain head's first layer (3 of 9
    public setups reverse inside the module they call the discriminator). The probe finds the
    module right after it and measures there."""

    def __init__(self):
        super().__init__()
        self.domain_head = nn.Sequential(self.grl, *self.domain_head)

    def domain(self, fs, ft):
        return self.domain_head(torch.cat([fs, ft]))


def grl_inside_domain_head():
    return spec_of(GRLInsideHead())


# --- correct, but not verifiable as specified: NOT VERIFIED, never a pass -------------------------

class BareHead(nn.Module):
    """A domain head that reverses in its own forward and holds no submodule to measure at."""

    def __init__(self, grl):
        super().__init__()
        torch.manual_seed(2)
        self.grl_fn = grl
        self.weight = nn.Parameter(torch.randn(1, 8) * 0.3)

    def forward(self, x):
        return torch.nn.functional.linear(self.grl_fn(x), self.weight)


class GRLInsideBareHead(DANN):
    def __init__(self):
        super().__init__()
        self.domain_head = BareHead(lambda x: Reverse.apply(x, self.grl.alpha))

    def domain(self, fs, ft):
        return self.domain_head(torch.cat([fs, ft]))


def grl_inside_bare_head():
    return spec_of(GRLInsideBareHead())


def losses_not_deterministic():
    """losses draws noise from a generator of its own: no step can be trusted."""
    noise = torch.Generator().manual_seed(3)

    def noisy(m, b):
        xs, xt, ys, dom = b
        return losses(m, (xs + 0.1 * torch.randn(xs.shape, generator=noise), xt, ys, dom))

    return spec_of(DANN(), noisy)


# setup -> the checks it leaves unverified (skip, ok False)
UNVERIFIED = {grl_inside_bare_head: {"reversal"}, losses_not_deterministic: {"domain_head_learns"}}

WIRED = {f.__name__: f for f in (correct_frozen_trunk, correct, correct_with_schedule_formula,
                                 correct_function_returns_input, correct_fungtion_shaped,
                                 correct_no_options, grl_inside_domain_head)}
# setup -> the checks it must fail (every other check passes or skips)
MISWIRED = {
    alpha_not_passed: {"schedule"},
    negative_schedule: {"reversal"},  # schedule: not measured, reversal names the sign
    subtracted_domain_loss: {"domain_head_learns"},  # the trunk IS reversed: by the objective
    reversal_after_domain_head: {"domain_head_learns"},  # reversal: skip, "inside or after the head"
    module_backward_never_called: {"reversal"},
    features_detached: {"reach"},
    trunk_under_no_grad: {"reach", "label_path"},
    grl_not_applied: {"reversal"},
    critic_not_in_optimizer: {"optimizer"},
    warm_start_never_steps: {"reach", "schedule"},
    hook_on_shared_features: {"label_path"},
    domain_loss_not_in_total: {"reversal", "domain_head_learns"},
    schedule_formula_differs: {"schedule"},
}


# --- the shapes real DA code has (issue: nine public setups read) --------------------------------
# Encoder, classifier and discriminator as separate objects (no model), a discriminator stepped
# by an optimizer of its own, adversarial training without a GRL (DomainBed's DANN), a GRL
# whose coefficient counts its own calls, and odd but legal layouts the probe must survive.

class Parts:
    """featurizer, classifier, discriminator: three top-level modules, as 6 of 9 setups keep them."""

    def __init__(self, grl: nn.Module | None = None) -> None:
        torch.manual_seed(0)
        self.featurizer = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.classifier = nn.Linear(8, 3)
        self.discriminator = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
        self.grl = grl


def gan_style(sign: float = -1.0, disc_sign: float = 1.0, lam: float = 0.5) -> dict:
    """DomainBed's AbstractDANN.update, in its shape: no GRL; the discriminator steps on its own
    loss with its own optimizer; the featurizer's objective is classifier_loss - lambda * disc_loss."""
    p = Parts()
    gen_opt = torch.optim.Adam([*p.featurizer.parameters(), *p.classifier.parameters()], lr=1e-3)
    disc_opt = torch.optim.Adam(p.discriminator.parameters(), lr=1e-3)

    def losses(model, b):
        xs, xt, ys, dom = b
        z = p.featurizer(torch.cat([xs, xt]))
        disc_loss = F.binary_cross_entropy_with_logits(p.discriminator(z), dom)
        classifier_loss = F.cross_entropy(p.classifier(z[:len(xs)]), ys)
        return {"domain": disc_loss, "label": classifier_loss,
                "total": classifier_loss + sign * lam * disc_loss,
                "discriminator": disc_sign * disc_loss}

    return {"batch": batch(), "losses": losses, "trunk": p.featurizer,
            "domain_head": p.discriminator, "label_head": p.classifier,
            "optimizer": [gen_opt, disc_opt]}


def correct_gan_style():
    return gan_style()


def gan_style_sign_wrong():
    """The featurizer's objective adds the discriminator's loss: it helps the discriminator."""
    return gan_style(sign=1.0)


def gan_style_discriminator_reversed():
    """The discriminator is stepped on the negated loss: trained against its own task."""
    return gan_style(disc_sign=-1.0)


def separate_parts(grl=None, discriminator_objective=None, critic_opt=True, subtract=False):
    """A GRL setup from three objects and two optimizers (Dassl steps its critic with optim_c)."""
    p = Parts(grl if grl is not None else ReferenceGRL(1.0))
    optimizers = [torch.optim.SGD([*p.featurizer.parameters(), *p.classifier.parameters()], lr=0.01)]
    if critic_opt:
        optimizers.append(torch.optim.SGD(p.discriminator.parameters(), lr=0.01))

    def losses(model, b):
        xs, xt, ys, dom = b
        fs, ft = p.featurizer(xs), p.featurizer(xt)
        domain = F.binary_cross_entropy_with_logits(
            p.discriminator(p.grl(torch.cat([fs, ft]))), dom)
        label = F.cross_entropy(p.classifier(fs), ys)
        out = {"domain": domain, "label": label}
        if subtract:
            out["total"] = label - domain
        if discriminator_objective is not None:
            out["discriminator"] = discriminator_objective * domain
        return out

    return {"batch": batch(), "losses": losses, "trunk": p.featurizer,
            "domain_head": p.discriminator, "label_head": p.classifier, "optimizer": optimizers,
            "set_progress": lambda q: p.grl.set_alpha(dann_schedule(q))}


def correct_separate_parts_two_optimizers():
    return separate_parts()


def critic_in_no_optimizer():
    return separate_parts(critic_opt=False)


def grl_head_stepped_on_reversed_objective():
    """A GRL setup whose discriminator is stepped on the reversed (negated) domain loss."""
    return separate_parts(discriminator_objective=-1.0)


def grl_and_subtracted():
    """A GRL and an objective that subtracts the domain loss: the two reversals cancel."""
    return separate_parts(subtract=True)


class CountingGRL(ReferenceGRL):
    """tllib's WarmStartGradientReverseLayer / DeepDA's curr_iter, in their shape: alpha is a
    Python number computed from a counter the layer advances on every call."""

    def __init__(self, max_iters: int = 20) -> None:
        super().__init__(0.0)
        self.iter_num, self.max_iters = 0, max_iters

    def forward(self, x):
        alpha = dann_schedule(min(self.iter_num / self.max_iters, 1.0))
        self.iter_num += 1
        return Reverse.apply(x, alpha)


def self_counting_per_domain():
    """The counting layer applied once per domain: the two calls of one step differ."""
    grl = CountingGRL()
    p = Parts(grl)
    opt = torch.optim.SGD([*p.featurizer.parameters(), *p.classifier.parameters(),
                           *p.discriminator.parameters()], lr=0.01)

    def losses(model, b):
        xs, xt, ys, dom = b
        fs, ft = p.featurizer(xs), p.featurizer(xt)
        ds, dt = p.discriminator(grl(fs)), p.discriminator(grl(ft))
        return {"label": F.cross_entropy(p.classifier(fs), ys),
                "domain": F.binary_cross_entropy_with_logits(torch.cat([ds, dt]), dom)}

    def set_progress(q):
        grl.iter_num = round(q * grl.max_iters)

    return {"batch": batch(), "losses": losses, "trunk": p.featurizer, "domain_head": p.discriminator,
            "label_head": p.classifier, "optimizer": opt, "set_progress": set_progress,
            "progress": (0.1, 0.3, 0.6)}


# Odd but legal layouts: the probe measures them or says it could not, never a traceback.

def trunk_calls_not_all_reaching_the_domain_loss():
    """The encoder runs on the mixed batch for the discriminator and on the source batch for the
    classifier: one trunk call does not feed the domain loss (and no GRL is between: the
    finite differences run; they once passed a None gradient to zeros_like)."""
    p = Parts(nn.Identity())
    opt = torch.optim.SGD([q for m in (p.featurizer, p.classifier, p.discriminator)
                           for q in m.parameters()], lr=0.01)

    def losses(model, b):
        xs, xt, ys, dom = b
        d = p.discriminator(p.grl(p.featurizer(torch.cat([xs, xt]))))
        return {"domain": F.binary_cross_entropy_with_logits(d, dom),
                "label": F.cross_entropy(p.classifier(p.featurizer(xs)), ys)}

    return {"batch": batch(), "losses": losses, "trunk": p.featurizer, "domain_head": p.discriminator,
            "label_head": p.classifier, "optimizer": opt}


def head_without_parameters():
    p = Parts(ReferenceGRL(0.7))
    head = nn.Sequential(nn.Tanh())

    def losses(model, b):
        xs, xt, ys, dom = b
        d = head(p.grl(p.featurizer(torch.cat([xs, xt])))).sum(1, keepdim=True)
        return {"domain": F.binary_cross_entropy_with_logits(d, dom)}

    return {"batch": batch(), "losses": losses, "trunk": p.featurizer, "domain_head": head}


def batch_of_a_dict_of_lists():
    p = Parts(ReferenceGRL(0.7))
    xs, xt, ys, dom = batch()

    def losses(model, b):
        z = p.featurizer(torch.cat(b["x"]))
        return {"domain": F.binary_cross_entropy_with_logits(p.discriminator(p.grl(z)), b["d"][0]),
                "label": F.cross_entropy(p.classifier(z[:BATCH]), b["y"][0])}

    return {"batch": {"x": [xs, xt], "y": [ys], "d": [dom]}, "losses": losses,
            "trunk": p.featurizer, "domain_head": p.discriminator, "label_head": p.classifier}


class TupleTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(4, 8)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return h, h.sum(1)  # features and a side output, as some backbones return


def trunk_returning_a_tuple():
    trunk, p = TupleTrunk(), Parts(ReferenceGRL(0.7))

    def losses(model, b):
        xs, xt, ys, dom = b
        z, _ = trunk(torch.cat([xs, xt]))
        return {"domain": F.binary_cross_entropy_with_logits(p.discriminator(p.grl(z)), dom),
                "label": F.cross_entropy(p.classifier(z[:BATCH]), ys)}

    return {"batch": batch(), "losses": losses, "trunk": trunk, "domain_head": p.discriminator,
            "label_head": p.classifier}


SHAPES_WIRED = {f.__name__: f for f in (correct_gan_style, correct_separate_parts_two_optimizers,
                                         head_without_parameters, batch_of_a_dict_of_lists,
                                         trunk_returning_a_tuple)}
SHAPES_MISWIRED = {
    gan_style_sign_wrong: {"reversal"},
    gan_style_discriminator_reversed: {"domain_head_learns"},
    critic_in_no_optimizer: {"optimizer"},
    grl_head_stepped_on_reversed_objective: {"domain_head_learns"},
    grl_and_subtracted: {"reversal", "domain_head_learns"},  # its head steps on 'total' too
    trunk_calls_not_all_reaching_the_domain_loss: {"reversal"},
}
