"""The self-tests' correct GRLs, in one place: the bases every mutant breaks and the clean GRLs
the checks must pass.

The float-alpha GRL is the product's own trusted reference (`grl_conformance.core.reference`), so the base
the mutants break is the very GRL the checks judge against; the buffer-alpha GRL is the other
design (alpha as state, a copy in forward). Mutants subclass these and override one method.
"""
from __future__ import annotations

import torch
from torch import nn

from grl_conformance.core.reference import ReferenceGRL, Reverse
from grl_conformance.core.registry import GRL, Impl

# The seed API with a Python-float alpha and a correct forward; a mutant overrides `forward`.
FloatAlphaLayer = ReferenceGRL


class BufferAlphaLayer(nn.Module):
    """Alpha in a 0-d float64 buffer updated in place (state_dict keeps it, DDP broadcasts it);
    forward returns a copy, backward multiplies by the -alpha it read at forward."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float64))

    def set_alpha(self, alpha):
        self.alpha.fill_(float(alpha))

    def forward(self, x):
        return _CloneReverse.apply(x, self.alpha)


class _CloneReverse(Reverse):
    """Reverse, but forward copies its input (a view is the other legitimate choice)."""

    @staticmethod
    def forward(x, alpha):
        return x.clone()


class FullReverse(Reverse):
    """The reference Function with a generated vmap rule and a jvp: right under eager torch.func."""

    generate_vmap_rule = True

    @staticmethod
    def jvp(ctx, x_tangent, alpha_tangent):
        return -ctx.alpha * x_tangent


def impl_of(name: str, layer: type, kind: str = "function",
            origin: str = "tests/selftest (clean)") -> Impl:
    """A registry entry for a layer class with the seed API (fn built from the layer)."""

    def gradient_reversal(x, alpha=1.0):
        return layer(alpha=alpha)(x)

    api = GRL(layer, gradient_reversal)
    return Impl(name=name, kind=kind, load=lambda: api, origin=origin,
                ref=f"tests.selftest.grls:{layer.__name__}")


__all__ = ["BufferAlphaLayer", "FloatAlphaLayer", "FullReverse", "Reverse", "impl_of"]
