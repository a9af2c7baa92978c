"""Eager autograd semantics of a GRL (DESIGN.md, 'Eager')."""
from __future__ import annotations

import torch

from harness.checks import check
from harness.outcome import Failed, expect


@check("forward.identity")
def forward_identity(impl) -> str:
    """The forward pass must return the input unchanged: same values, dtype, shape, device."""
    layer = impl.api.layer(alpha=1.0)
    aliased = copied = 0
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        base = torch.tensor([0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), -3.25, 7.0],
                            dtype=dtype)
        for x in (base, base.reshape(2, 4).t(), torch.tensor(2.5, dtype=dtype),
                  torch.empty(0, 3, dtype=dtype)):
            x = x.clone(memory_format=torch.preserve_format) if x.dim() < 2 else x
            y = layer(x.requires_grad_(True) if x.is_floating_point() else x)
            where = f"{dtype} shape {tuple(x.shape)}{' transposed' if not x.is_contiguous() else ''}"
            expect(isinstance(y, torch.Tensor), f"{where}: returned {type(y).__name__}")
            expect(y.dtype == x.dtype, f"{where}: output dtype {y.dtype}")
            expect(y.shape == x.shape, f"{where}: output shape {tuple(y.shape)}")
            expect(y.device == x.device, f"{where}: output device {y.device}")
            same = torch.equal(torch.nan_to_num(y.detach(), nan=0.0), torch.nan_to_num(x.detach(), nan=0.0)) \
                and torch.equal(y.detach().isnan(), x.detach().isnan()) \
                and torch.equal(torch.signbit(y.detach()), torch.signbit(x.detach()))
            if not same:
                raise Failed(f"{where}: output differs from input")
            if y.numel() and y.data_ptr() == x.data_ptr():
                aliased += 1
            elif y.numel():
                copied += 1
    how = "aliases its input (view)" if not copied else ("copies" if not aliased else "sometimes aliases")
    return f"identical for 4 dtypes x contiguous/transposed/0-d/empty with +-0, +-inf, nan; output {how}"
