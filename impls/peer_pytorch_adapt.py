"""pytorch-adapt 0.0.83 (PyPI): `pytorch_adapt.layers.GradientReversal(weight=1.0)`, alpha as a
1-element float32 buffer `weight` updated in place by `update_weight`, an old-style
`autograd.Function` that keeps the weight on ctx (moved to the input's device each forward).

`pytorch_adapt.layers/__init__` imports every layer (torchmetrics, ...) and the package needs
torchvision, which has no CPU build here, so only the layer's own file is loaded
(`layers/gradient_reversal.py`: it needs `pytorch_metric_learning.utils.common_functions`,
which needs scipy, and `pytorch_adapt.utils.common_functions`, which needs tqdm).
`set_alpha` maps to `update_weight`, the constructor's `alpha` to `weight`. One row: the
package publishes only the module.
"""
import importlib.util
import sys
from pathlib import Path

from grl_conformance.core.registry import GRL, Impl, function_from_layer
from grl_conformance.impls._peer import loader, origin

DIST = "pytorch-adapt"
MODULE = "pytorch_adapt.layers.gradient_reversal"


def _import_layer_file():
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    import pytorch_adapt  # its __init__ only sets __version__

    path = Path(pytorch_adapt.__file__).parent / "layers" / "gradient_reversal.py"
    spec = importlib.util.spec_from_file_location(MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # relative imports resolve to pytorch_adapt.utils
    sys.modules[MODULE] = module
    return module


def _api(module) -> GRL:
    class GradientReversalLayer(module.GradientReversal):
        def __init__(self, alpha=1.0):
            super().__init__(weight=alpha)

        def set_alpha(self, alpha):
            self.update_weight(alpha)

    return GRL(GradientReversalLayer, function_from_layer(GradientReversalLayer))


IMPL = Impl(name="pytorch_adapt", kind="package", load=loader(DIST, MODULE, _api, importer=_import_layer_file),
            origin=origin(DIST))
