"""pytorch-revgrad 0.2.0 (PyPI): `RevGrad(alpha=1.)`, a module holding alpha as a plain tensor
attribute `_alpha = tensor(alpha)` (not a buffer), calling the old-style `autograd.Function`
`revgrad(input_, alpha_)` that saves its input and alpha for backward.

One row: the module and the functional form are the same code path (the module only stores
the tensor alpha and calls `revgrad`). The package has no setter; `set_alpha` here does what
its constructor does (`self._alpha = tensor(alpha, requires_grad=False)`), and the functional
form gets alpha the way the module passes it, as `tensor(alpha)` (a Python float alpha makes a
float32 tensor, as in the package).
"""
from grl_conformance.core.registry import GRL, Impl
from grl_conformance.impls._peer import loader, origin

DIST = "pytorch-revgrad"


def _api(module) -> GRL:
    import torch
    from pytorch_revgrad.functional import revgrad

    class RevGradLayer(module.RevGrad):
        def __init__(self, alpha=1.0):
            super().__init__(alpha=alpha)

        def set_alpha(self, alpha):
            self._alpha = torch.tensor(alpha, requires_grad=False)

    def gradient_reversal(x, alpha=1.0):
        return revgrad(x, torch.tensor(alpha, requires_grad=False))

    return GRL(RevGradLayer, gradient_reversal)


IMPL = Impl(name="pytorch_revgrad", kind="package", load=loader(DIST, "pytorch_revgrad", _api),
            origin=origin(DIST))
