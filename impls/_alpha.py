"""The alpha state the four reference rows share (not a row: the name starts with `_`).

-alpha lives in a 0-d float64 buffer `neg_alpha`, updated IN PLACE by `set_alpha`:
- a buffer follows `.to(device)`, is in `state_dict` and is broadcast by DDP;
- in place, so a compiled graph or a captured CUDA graph that holds its address reads the new
  value (no recompile per alpha, no alpha frozen at capture);
- -alpha, so the backward is a single multiply;
- float64, so a float64 input keeps alpha's full precision (a 0-d tensor does not promote a
  dimensioned gradient; rows cast a 0-d result back).
"""
import torch
from torch import Tensor, nn

ALPHA_DTYPE = torch.float64


def neg_alpha_tensor(alpha) -> Tensor:
    """-alpha as a detached 0-d float64 tensor, from a float, a NumPy float or a tensor."""
    if isinstance(alpha, Tensor):
        return -alpha.detach().to(ALPHA_DTYPE)
    return torch.tensor(-float(alpha), dtype=ALPHA_DTYPE)


class NegAlphaLayer(nn.Module):
    """Seed-API module whose subclasses only write `forward(x)` using `self.neg_alpha`."""

    neg_alpha: Tensor

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("neg_alpha", neg_alpha_tensor(alpha))

    @torch.no_grad()
    def set_alpha(self, alpha) -> None:
        if isinstance(alpha, Tensor):
            self.neg_alpha.copy_(alpha.detach().neg())
        else:
            self.neg_alpha.fill_(-float(alpha))

    @property
    def alpha(self) -> float:
        """The current alpha as a float (a device sync on CUDA; never used in forward)."""
        return -float(self.neg_alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
