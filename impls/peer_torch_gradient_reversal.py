"""torch-gradient-reversal 1.0.0 (PyPI): a `torch.library` op `gradient_reversal::grl(Tensor x,
float alpha)` whose forward returns `aten.alias(x)` and whose autograd is registered with
`register_autograd` (backward `-ctx.alpha * grad`).

Two published forms, two code paths, two rows:
- `GradientReversalLayer(alpha)`: alpha is a 0-d float32 buffer, `set_alpha` fills it in place,
  and `forward` reads it back with `float(self.alpha)` before calling the op (a host read
  every step: a graph break under torch.compile).
- `gradient_reversal(x, alpha)`: calls the op with a Python float. Its layer here is the seed
  adapter that keeps alpha as a Python float and calls the function.
Nothing of the package's behaviour is changed.
"""
from grl_conformance.core.registry import GRL, Impl, function_from_layer, layer_from_function
from grl_conformance.impls._peer import loader, origin

DIST = "torch-gradient-reversal"


def _module_api(module) -> GRL:
    layer = module.GradientReversalLayer  # constructor (alpha=1.0) and set_alpha(alpha) as the seed API
    return GRL(layer, function_from_layer(layer))


def _function_api(module) -> GRL:
    fn = module.gradient_reversal
    return GRL(layer_from_function(fn, "gradient_reversal"), fn)


IMPLS = [
    Impl(name="tgr_module", kind="package", load=loader(DIST, "gradient_reversal", _module_api),
         origin=origin(DIST)),
    Impl(name="tgr_function", kind="package", load=loader(DIST, "gradient_reversal", _function_api),
         origin=origin(DIST)),
]
