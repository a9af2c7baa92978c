"""One loss's gradient at the trunk's output against its gradient at one head's input, paired
by value.

The trunk may run several times per step (source and target batches) and the domain head may
see those outputs one by one or concatenated, in any order. Every tensor the trunk outputs is
laid end to end in one flat "trunk space"; each head input is found in it by value (a GRL's
forward is the identity, so the head's input holds the very numbers the trunk output, reshaped
or concatenated), which tells which gradient element at the head belongs to which at the trunk.
Then `g_trunk = c * g_head`, with `c = -alpha` on the domain path and `c = 1` on the label path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grl_conformance.core.outcome import exception_line
from grl_conformance.core.tolerances import tolerance
from grl_conformance.dann_probe.watch import (
    gradients,
)

# How far `g_trunk` may be from `c * g_head` (relative to |g_trunk|), and how precisely a
# measured alpha is held to a formula: the harness's one tolerance table (core/tolerances.py),
# per dtype, since both depend on the gradients' precision.
RESIDUAL = tolerance("probe_residual")
ALPHA = tolerance("probe_alpha")


@dataclass
class Flow:
    """One loss's gradient at the trunk's output against its gradient at one head's input."""

    reached: bool = False          # some gradient arrives at the trunk's output
    finite: bool = True
    trunk_norm: float = 0.0
    head_detached: bool = False    # the head's input carries no gradient at all
    trunk_without_grad: bool = False  # the trunk's own output carries none (no_grad, detach)
    comparable: bool = False
    reason: str = ""               # why not comparable
    coefficient: float = math.nan  # g_trunk ~= coefficient * g_head
    residual: float = math.nan     # |g_trunk - c g_head| / |g_trunk|
    tolerance: float = 0.0
    alpha_tolerance: float = ALPHA.rtol_for(torch.float32)
    error: str = ""                # the backward raised
    trunk_grads: list = field(default_factory=list, repr=False)  # per trunk output, for the FD probe
    # per trunk output (one per trunk call, in call order): (coefficient, residual) where the
    # head gets a gradient from it; a GRL whose coefficient steps on each call gives each call
    # its own multiple, and no single one fits them all
    per_call: list = field(default_factory=list)

    @property
    def proportional(self) -> bool:
        return self.comparable and (self.residual <= self.tolerance or self.proportional_per_call)

    @property
    def unreversed(self) -> bool:
        """The gradient arrives unchanged: a multiple of 1 (no reversal stands between)."""
        return self.proportional and abs(self.coefficient - 1.0) <= self.alpha_tolerance

    @property
    def proportional_per_call(self) -> bool:
        """Each call's gradient is a multiple of its own, all of one sign, though no one
        multiple fits them all (the alpha of each call differs)."""
        return (self.comparable and len(self.per_call) > 1
                and all(r <= self.tolerance for _, r in self.per_call)
                and len({c > 0 for c, _ in self.per_call}) == 1)

    @property
    def calls_differ(self) -> bool:
        coefficients = [c for c, _ in self.per_call]
        return (self.proportional_per_call and max(coefficients) - min(coefficients)
                > self.alpha_tolerance * max(abs(c) for c in coefficients))


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).to(torch.float64)


def _place(space: torch.Tensor, starts: list[int], sizes: list[int], gt: torch.Tensor,
           head: torch.Tensor) -> list[tuple[int, int, int]] | None:
    """Where the head's input stands in trunk space, as (head offset, space offset, length)
    segments: one run of numbers starting at a trunk output's start or ending at one's end (a
    whole output, reshaped; a prefix or suffix; several in call order), else whole outputs in
    any order. Among equal candidates, one where the loss's gradient arrives wins."""
    flat = head.detach().reshape(-1)
    n = flat.numel()

    def equal(at: int, length: int, offset: int = 0) -> bool:
        return (0 <= at and at + length <= space.numel()
                and torch.equal(space[at:at + length].to(flat.dtype), flat[offset:offset + length]))

    def carries(at: int, length: int) -> bool:
        return bool(gt[at:at + length].ne(0).any())

    ends = [s + k for s, k in zip(starts, sizes, strict=True)]
    found = [s for s in sorted({*starts, *(e - n for e in ends)}) if equal(s, n)]
    if found:
        return [(0, next((s for s in found if carries(s, n)), found[0]), n)]
    segments, offset, used = [], 0, set()
    while offset < n:
        options = [i for i, (s, k) in enumerate(zip(starts, sizes, strict=True))
                   if i not in used and 0 < k <= n - offset and equal(s, k, offset)]
        if not options:
            return None
        i = next((i for i in options if carries(starts[i], sizes[i])), options[0])
        used.add(i)
        segments.append((offset, starts[i], sizes[i]))
        offset += sizes[i]
    return segments


def _shapes(tensors: list[torch.Tensor]) -> str:
    shapes = sorted({str(list(t.shape)) for t in tensors})
    return ", ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "")


def compare(loss: torch.Tensor, trunk: list[torch.Tensor], heads: list[torch.Tensor],
            head_name: str, without_grad: int = 0) -> Flow:
    """The flow of `loss`'s gradient from one head's input back to the trunk's output."""
    try:
        grads = gradients(loss, trunk + heads)
    except Exception as exc:  # noqa: BLE001 - a backward that raises is the model's own failure
        return Flow(trunk_without_grad=without_grad > 0, error=exception_line(exc))
    return pair(loss, trunk, grads[:len(trunk)], heads, grads[len(trunk):], head_name, without_grad)


def pair(loss: torch.Tensor, trunk: list[torch.Tensor], g_trunk: list, heads: list[torch.Tensor],
         g_heads: list, head_name: str, without_grad: int = 0) -> Flow:
    """`g_trunk ~= c * g_head` for the gradients of one loss (`compare` takes them)."""
    flow = Flow(trunk_without_grad=without_grad > 0)
    flow.trunk_grads = dense(trunk, g_trunk)
    sizes = [t.numel() for t in trunk]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    space = torch.cat([flat(t) for t in trunk]) if trunk else torch.zeros(0, dtype=torch.float64)
    gt = torch.cat([flat(g) for g in flow.trunk_grads]) if trunk else space
    gh = torch.zeros_like(space)
    flow.reached = any(g is not None for g in g_trunk)
    flow.finite = bool(gt.isfinite().all()) and bool(loss.detach().isfinite())
    flow.trunk_norm = float(gt.norm())
    flow.head_detached = all(g is None for g in g_heads)
    dtypes = [t.dtype for t in trunk + heads if t.is_floating_point()]
    flow.tolerance = RESIDUAL.loosest(dtypes)
    flow.alpha_tolerance = ALPHA.loosest(dtypes)
    unplaced = []
    for head, g in zip(heads, g_heads, strict=True):
        segments = _place(space, starts, sizes, gt, head)
        if segments is None:
            if g is not None and bool(g.ne(0).any()):
                unplaced.append(head)
            continue
        if g is not None:
            fg = flat(g)
            for offset, at, length in segments:
                gh[at:at + length] += fg[offset:offset + length]
    if unplaced:
        flow.reason = (f"the {head_name}'s input ({_shapes(unplaced)}) is not the trunk's output "
                       f"({_shapes(trunk)}) reshaped or concatenated: something other than a GRL "
                       "and a reshape stands between them")
        return flow
    if not flow.finite or not bool(gh.isfinite().all()):
        flow.reason = "non-finite loss or gradient (nan or inf)"
        return flow
    hh = float(gh @ gh)
    if hh == 0.0:
        flow.reason = f"the loss gives the {head_name}'s input no gradient"
        return flow
    flow.comparable = True
    flow.coefficient, flow.residual = _multiple(gt, gh)
    if flow.residual > flow.tolerance:
        for start, size in zip(starts, sizes, strict=True):
            part = gh[start:start + size]
            if bool(part.ne(0).any()):
                flow.per_call.append(_multiple(gt[start:start + size], part))
    return flow


def dense(tensors: list[torch.Tensor], grads: list) -> list[torch.Tensor]:
    """Each gradient detached, zeros where the loss does not depend on that tensor (None)."""
    return [torch.zeros_like(t.detach()) if g is None else g.detach()
            for t, g in zip(tensors, grads, strict=True)]


def _multiple(gt: torch.Tensor, gh: torch.Tensor) -> tuple[float, float]:
    """(c, residual): the least-squares `gt ~= c * gh` and |gt - c gh| relative to the larger."""
    hh = float(gh @ gh)
    c = float(gt @ gh) / hh + 0.0
    scale = max(float(gt.norm()), abs(c) * math.sqrt(hh))
    return c, (float((gt - c * gh).norm()) / scale if scale else 0.0)
