"""GRL as a C++ operator with C++ autograd (kind "cpp"): `impls/csrc/grl_op.cpp`.

    grl_cpp::reverse(Tensor x, Tensor neg_alpha) -> Tensor

The operator is registered with TORCH_LIBRARY; its kernel is CompositeExplicitAutograd (one
kernel for every backend: it only clones) and its autograd is a C++
`torch::autograd::Function` registered for the Autograd key, so eager training never enters
Python for the GRL. The fake (meta) kernel is registered here from Python so torch.compile
and export can trace it. Alpha is a 0-d float64 buffer, updated in place, for the same reasons
as in `library_op` (no recompiles, DDP broadcast, state_dict, CUDA graph replay); the C++
backward keeps it in saved_data (read at backward time, no saved-tensor version check, as
in `library_op`) and multiplies once. The clone is imposed by the kind (a registered op may not alias its input).

Building: the library is compiled on first use (not at import, so listing the registry stays
cheap) by `impls/_cpp_build.py` into `$GRL_CACHE_DIR` or `~/.cache/grl-conformance/cpp/`,
under `torch-<version>-py<major.minor>/grl_cpp`. A later process reuses it (ninja sees it is
up to date). A build failure is a `LoadError` quoting the compiler's error line, so the row
shows `error` cells instead of the run crashing. A C++ autograd Function has no forward-mode
rule, so torch.func.jvp does not get the reversal.
"""
import threading
from pathlib import Path

import torch
from torch import Tensor

from grl_conformance.core.registry import GRL, Impl
from grl_conformance.impls._alpha import NegAlphaLayer, neg_alpha_tensor
from grl_conformance.impls._cpp_build import build_and_load

SOURCE = Path(__file__).resolve().parent / "csrc" / "grl_op.cpp"
LIBRARY = "grl_cpp"

_lock = threading.Lock()
_loaded: str | None = None


def load_library() -> str:
    """Build (first time) and load the operator library; idempotent. Returns its path."""
    global _loaded
    with _lock:
        if _loaded is None:
            path = build_and_load(LIBRARY, [SOURCE])
            torch.library.register_fake(f"{LIBRARY}::reverse")(_fake_reverse)
            _loaded = path
    return _loaded


def _fake_reverse(x: Tensor, neg_alpha: Tensor) -> Tensor:
    return torch.empty_like(x)


class GradientReversalLayer(NegAlphaLayer):
    def __init__(self, alpha: float = 1.0) -> None:
        load_library()
        super().__init__(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.grl_cpp.reverse(x, self.neg_alpha)


def gradient_reversal(x: Tensor, alpha=1.0) -> Tensor:
    load_library()
    return torch.ops.grl_cpp.reverse(x, neg_alpha_tensor(alpha))


def _load_api() -> GRL:
    load_library()
    return GRL(GradientReversalLayer, gradient_reversal)


IMPL = Impl(name="cpp_op", kind="cpp", load=_load_api, reference=True, unsupported={
    "func.grad": "functorch refuses a C++ torch::autograd::Function",
    "func.jvp": "functorch refuses a C++ torch::autograd::Function",
})
