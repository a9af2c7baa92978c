"""What a GRL costs in memory (docs/checks.md, 'Eager'): memory.saved, memory.graph_freed,
memory.offload. A GRL needs only alpha for backward; anything it saves, keeps alive or packs
under saved-tensor hooks beyond that is the cost these columns measure."""
from __future__ import annotations

import torch

from grl_conformance.checks import check
from grl_conformance.checks.kit.forms import form, forms
from grl_conformance.checks.kit.hooks import grad_under_hooks, offload_hooks
from grl_conformance.checks.kit.inputs import OFFLOAD_ALPHA, randn
from grl_conformance.checks.kit.judge import judge_under_hooks
from grl_conformance.checks.kit.models import impl_model, linear_grl_linear, reference_model
from grl_conformance.core.outcome import Failed, Outcome, passed
from grl_conformance.core.tolerances import dtype_name

CONCERN = "eager"  # the advice table's column for this area's checks (core/check.py)

# --- memory.saved ---------------------------------------------------------------------------

def _saved_by(f, n: int):
    """(bytes held, descriptions) of what f saves for backward on a fresh leaf of n float32."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(13)).requires_grad_(True)
    seen: list[torch.Tensor] = []

    def pack(t):
        seen.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f(x)
    storages, parts = {}, []
    for t in seen:
        try:
            key, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        except Exception:  # noqa: BLE001 - tensors without storage (subclasses): count elements
            key, nbytes = id(t), t.numel() * t.element_size()
        storages[key] = max(storages.get(key, 0), nbytes)
        what = "the input itself" if t.numel() and t.data_ptr() == x.data_ptr() else \
            f"{tuple(t.shape)} {dtype_name(t.dtype)}"
        parts.append(what)
    return sum(storages.values()), parts


def _keeps_input_alive(f, n: int) -> bool:
    """Whether the graph built by f keeps its (non-leaf) input alive by other means than
    save_for_backward, e.g. `ctx.x = x` in a Function, which saved_tensors_hooks never sees."""
    import gc
    import weakref

    leaf = torch.randn(n, generator=torch.Generator().manual_seed(14)).requires_grad_(True)
    x = leaf * 1.0
    ref = weakref.ref(x)
    y = f(x)
    out = y.sum() if isinstance(y, torch.Tensor) else None
    del x, y
    gc.collect()
    alive = ref() is not None
    del out
    return alive


@check("memory.saved", concern="memory", runs_backward=False)
def memory_saved(impl) -> Outcome:
    """A GRL needs only alpha for backward: saving an activation-sized tensor wastes memory."""
    small, big = 4096, 16384
    notes = []
    for label, f in forms(impl, 0.5):
        b_small, parts = _saved_by(f, small)
        b_big, _ = _saved_by(f, big)
        what = f"{b_big} B at N={big} float32" + (f" ({', '.join(parts)})" if parts else "")
        if b_big > b_small or b_big >= big * 4 // 2:
            raise Failed(f"{label} saves activation-sized tensors for backward: {b_small} B at N={small}, "
                         f"{what}", summary=f"saves {b_big // 1024} KiB")
        if _keeps_input_alive(f, big):
            raise Failed(f"{label} keeps its input alive for backward outside save_for_backward "
                         f"(e.g. a tensor stored on ctx): {big * 4} B held at N={big} float32",
                         summary=f"keeps {big * 4 // 1024} KiB")
        notes.append(f"{label} {b_big} B" + (f" ({', '.join(parts)})" if parts else ""))
    return passed(f"saves no activation-sized tensor: {'; '.join(notes)} for a {big * 4} B input")


@check("memory.graph_freed", concern="memory", runs_backward=False)  # judges memory, not the gradient
def memory_graph_freed(impl) -> Outcome:
    """A step's graph must be freed by reference counting alone, backward run or not: a GRL
    that keeps its output on ctx makes a cycle that holds every step's activations until gc."""
    import gc
    import weakref

    notes = []
    for label, f in forms(impl, 0.5):
        for backward in (False, True):
            when = "after backward" if backward else "without backward (an evaluation forward)"
            gc.collect()
            gc.disable()
            try:
                x = randn(64, 256, dtype=torch.float32, seed=21).requires_grad_(True)
                h = x * 2.0  # an activation the step's graph owns
                y = f(h)
                loss = (y * y).sum()
                if backward:
                    loss.backward()
                refs = {"the GRL's output": weakref.ref(y), "its input activation": weakref.ref(h)}
                del x, h, y, loss
                alive = [name for name, ref in refs.items() if ref() is not None]
            finally:
                gc.enable()
            if alive:
                gc.collect()
                freed = all(ref() is None for ref in refs.values())
                raise Failed(f"{label}: {' and '.join(alive)} still alive {when} once every "
                             f"reference is dropped" + ("; gc.collect() frees it: a reference "
                             "cycle (e.g. the output kept on ctx)" if freed else
                             "; even gc.collect() does not free it"),
                             summary="kept until gc" if freed else "leaks")
        notes.append(label)
    return passed(f"{', '.join(notes)}: output and input activation freed without the garbage "
                  "collector, with and without backward")


@check("memory.offload", concern="memory")
def memory_offload(impl) -> Outcome:
    """Under saved-tensor hooks (one compressing what autograd saves to bfloat16, as activation
    compression does, and torch's `save_on_cpu`), the gradients must equal the reference GRL's
    under the same hooks: a GRL that saves alpha through save_for_backward gets a rounded alpha
    back. The summary gives the bytes the GRL packs (0 for one that saves nothing)."""
    alpha = OFFLOAD_ALPHA
    made = [("layer", lambda: impl_model(impl, alpha)),
            ("fn", lambda: linear_grl_linear(form(impl, "fn", alpha)))]
    notes, most = [], 0
    for hooks_label, lossy, make_hooks in offload_hooks():
        want, ref_bytes = grad_under_hooks(reference_model(alpha).double(), make_hooks)
        for label, make in made:
            got, got_bytes = grad_under_hooks(make().double(), make_hooks)
            extra = max(0, got_bytes - ref_bytes)
            most = max(most, extra)
            where = f"{label} under {hooks_label}"
            # strict even under the lossy hook: in eager, saving alpha is the GRL's own choice
            judge_under_hooks(got, want, alpha, where=where, packed=extra, lossy=lossy)
            notes.append(f"{where} packs {extra} B")
    return passed(f"float64 model, alpha {alpha}: input gradient equals the reference GRL's under "
                  f"the same hooks; {'; '.join(notes)} beyond the reference's",
                  summary=f"packs {most} B")

