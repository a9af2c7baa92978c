"""Every tolerance the harness judges with, in one table of one type (checks and probe alike).

A `Tolerance` says how close is right: `|got - want| <= atol + rtol * |want|`, element by
element. Its `rtol` is a number, or a multiple of the judged dtype's machine epsilon (`eps=`,
"within 4 ulps of float16"), or a number per dtype (`by_dtype=`, where what it absorbs grows
with the dtype's precision). No other module of the package writes a tolerance number; a
self-test (tests/selftest/test_tolerances.py) finds any small float in a comparison outside
this file. docs/checks.md ("Tolerances") shows `TOLERANCES` as it is (a self-test holds the
two equal).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


def dtype_name(dtype) -> str:
    """`float32` for torch.float32: how a dtype reads in a detail and in `by_dtype`."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Tolerance:
    name: str
    why: str
    rtol: float = 0.0
    atol: float = 0.0
    eps: float | None = None  # rtol as a multiple of the judged dtype's epsilon
    by_dtype: dict = field(default_factory=dict)  # dtype name -> rtol (others: `rtol`)

    def rtol_for(self, dtype=None) -> float:
        if self.eps is not None:
            return self.eps * torch.finfo(dtype or torch.float32).eps
        if dtype is not None and dtype_name(dtype) in self.by_dtype:
            return self.by_dtype[dtype_name(dtype)]
        return self.rtol

    def loosest(self, dtypes) -> float:
        """The rtol for the least precise of `dtypes` (the plain `rtol` when there are none)."""
        return max((self.rtol_for(d) for d in dtypes), default=self.rtol_for())

    def kw(self, dtype=None) -> dict:
        """`rtol=..., atol=...` for torch.allclose / torch.testing."""
        return {"rtol": self.rtol_for(dtype), "atol": self.atol}

    def close(self, got, want, dtype=None) -> bool:
        """Same shape and within this tolerance (compared in float64; NaN never close)."""
        return got.shape == want.shape and torch.allclose(got.double(), want.double(),
                                                          **self.kw(dtype))

    def bound(self, scale: float = 0.0, dtype=None) -> float:
        """The largest deviation allowed from a value of magnitude `scale`."""
        return self.atol + self.rtol_for(dtype) * abs(scale)

    def holds(self, deviation: float, scale: float = 0.0, dtype=None) -> bool:
        """For a scalar: `deviation <= atol + rtol * |scale|`."""
        return deviation <= self.bound(scale, dtype)

    def text(self, dtype=None) -> str:
        if self.eps is not None and dtype is None:
            return f"{self.eps:g} eps of the dtype" + (f", atol {self.atol:g}" if self.atol else "")
        return f"rtol {self.rtol_for(dtype):g}, atol {self.atol:g}"


def _table(*entries: Tolerance) -> dict[str, Tolerance]:
    return {t.name: t for t in entries}


TOLERANCES = _table(
    # --- the checks ----------------------------------------------------------------------
    Tolerance("graph", "float32 results of the same math in another order (torch.testing's "
              "float32 defaults): compile, export, TorchScript, FX", rtol=1.3e-6, atol=1e-5),
    Tolerance("one_op", "float32: one multiply by -alpha, nothing reordered (compiled torch.func, "
              "the context columns' parameter gradients)", rtol=1e-6, atol=1e-7),
    Tolerance("func", "small float32 values through a torch.func transform", rtol=1e-6, atol=1e-6),
    Tolerance("reduction", "float32 summed in another order: DDP, CUDA graphs, compiled "
              "autograd, onnxruntime", rtol=1e-5, atol=1e-6),
    Tolerance("inductor", "float32 fused and reordered by inductor under CUDA graphs",
              rtol=1e-4, atol=1e-5),
    Tolerance("hooks64", "float64 under saved-tensor hooks (a float32-rounded alpha is "
              "backward.reversal's finding, not this column's)", rtol=1e-6, atol=1e-9),
    Tolerance("structure", "float32 rounding of alpha or the gradient, where the check is about "
              "structure, not precision", rtol=1e-6, atol=1e-30),
    Tolerance("scale", "a gradient that is an exact multiple of the upstream one", rtol=1e-6),
    Tolerance("ulps", "one multiply by -alpha in the judged dtype: a few units in the last place",
              eps=4),
    Tolerance("reversal", "backward.reversal: -alpha * grad rounded once in the judged dtype",
              eps=2),
    Tolerance("bfloat16_rounding", "a value rounded to bfloat16 (8 significant bits) once",
              rtol=2.0 ** -8),
    Tolerance("same_number", "a Python float read back from a layer's attribute", rtol=1e-6),
    Tolerance("subnormal", "backward.reversal's absolute floor: one unit of the dtype's "
              "subnormals (smallest normal x eps), the rounding of a result below the normal "
              "range", eps=1),
    # --- the reversal probe (measured on the user's own model and dtype) -----------------
    Tolerance("probe_residual", "|g_trunk - c * g_head| / |g_trunk| of a GRL that multiplies "
              "once, in the least precise gradient dtype involved", rtol=1e-5,
              by_dtype={"float64": 1e-9, "float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}),
    Tolerance("probe_alpha", "how precisely a measured alpha is held to a formula or called "
              "flat, by the same dtype", rtol=1e-4,
              by_dtype={"float64": 1e-6, "float32": 1e-4, "float16": 2e-3, "bfloat16": 1e-2}),
    Tolerance("probe_fd_alpha", "an alpha measured by central finite differences in float32",
              rtol=5e-2),
    Tolerance("probe_loss_rounding", "what rounding alone may move a loss by between two "
              "identical forwards", eps=64, atol=1e-17),
    Tolerance("probe_half_step", "a loss's slope along a step measured again at half the step "
              "(curvature and rounding move it that much at most)", rtol=0.25),
    Tolerance("probe_other_terms", "a share of the trunk's gradient left unexplained by the "
              "domain and label losses before the verdict names other terms", rtol=1e-3),
)


def tolerance(name: str) -> Tolerance:
    return TOLERANCES[name]
