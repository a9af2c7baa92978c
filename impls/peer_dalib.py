"""dalib 0.2 (PyPI, Transfer-Learning-Library): `dalib.modules.grl`.

- `GradientReverseLayer()`: no state; the coefficient is an argument of every call,
  `forward(input, coeff)`, into an old-style `autograd.Function` (forward `input * 1.0`, a copy;
  backward `grad_output.neg() * coeff`). The seed layer keeps alpha and passes it as `coeff`.
- `WarmStartGradientReverseLayer(alpha, lo, hi, max_iters, auto_step)`: the coefficient follows
  its own schedule `lambda_i = 2 (hi - lo) / (1 + exp(-alpha i / N)) - (hi - lo) + lo`, computed
  in forward with `np.float(...)` (removed in NumPy 1.24; the cells show what it does under the
  NumPy installed). Its `alpha` is the schedule's steepness, not the coefficient. The seed
  alpha is the coefficient, so constructor and `set_alpha` pin the schedule at it with
  `lo = hi = alpha` (then lambda_i = alpha exactly for every i); `auto_step=True` as dalib's
  own DANN uses it, so every forward also advances `iter_num`.
Two rows: separate code paths.
"""
from grl_conformance.core.registry import GRL, Impl, function_from_layer
from grl_conformance.impls._peer import loader, origin

DIST = "dalib"


def _grl_api(module) -> GRL:
    import torch

    class GradientReverseLayer(torch.nn.Module):
        def __init__(self, alpha=1.0):
            super().__init__()
            self.grl = module.GradientReverseLayer()
            self.alpha = alpha

        def set_alpha(self, alpha):
            self.alpha = alpha

        def forward(self, x):
            return self.grl(x, self.alpha)

    def gradient_reversal(x, alpha=1.0):
        return module.GradientReverseLayer()(x, alpha)

    return GRL(GradientReverseLayer, gradient_reversal)


def _warm_start_api(module) -> GRL:
    class WarmStartLayer(module.WarmStartGradientReverseLayer):
        def __init__(self, alpha=1.0):
            super().__init__(alpha=1.0, lo=alpha, hi=alpha, max_iters=1000, auto_step=True)

        def set_alpha(self, alpha):
            self.lo = self.hi = alpha

    return GRL(WarmStartLayer, function_from_layer(WarmStartLayer))


IMPLS = [
    Impl(name="dalib_grl", kind="package", load=loader(DIST, "dalib.modules.grl", _grl_api),
         origin=origin(DIST)),
    Impl(name="dalib_warmstart", kind="package",
         load=loader(DIST, "dalib.modules.grl", _warm_start_api), origin=origin(DIST)),
]
