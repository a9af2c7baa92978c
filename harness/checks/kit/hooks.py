"""The saved-tensor hooks the offload columns (memory.offload, compile.offload) run a model
under, and one step under them."""
from __future__ import annotations

import torch

from grl_conformance.checks.kit.inputs import sample_inputs


def offload_hooks():
    """The saved-tensor hooks the offload columns run under, each counting the bytes it packs:
    (label, lossy, make) where make() gives (context manager, counter dict with "bytes").

    `compress`: every saved floating tensor kept as bfloat16, its dtype restored on unpack
    (activation compression); lossy on purpose, so a value a GRL needs exactly and saves
    through autograd (alpha) comes back rounded. `save_on_cpu`: torch's offloading hooks
    (`torch.autograd.graph.save_on_cpu`, unpinned); lossless, so the gradient must be exact.
    On a CPU tensor its pack keeps the tensor itself (`.cpu()`): here it shows the hooks run
    and what they are handed, not a copy.
    """
    from torch.autograd.graph import save_on_cpu, saved_tensors_hooks

    def compress():
        count = {"bytes": 0}

        def pack(t):
            count["bytes"] += t.numel() * t.element_size()
            return t.dtype, (t.to(torch.bfloat16) if t.is_floating_point() else t)

        def unpack(saved):
            dtype, t = saved
            return t.to(dtype)

        return saved_tensors_hooks(pack, unpack), count

    def offload():
        count = {"bytes": 0}
        torch_hooks = save_on_cpu(pin_memory=False)
        pack_to_cpu = torch_hooks.pack_hook

        def pack(t):
            count["bytes"] += t.numel() * t.element_size()
            return pack_to_cpu(t)

        return saved_tensors_hooks(pack, torch_hooks.unpack_hook), count

    return [("compressing hooks (bfloat16)", True, compress), ("save_on_cpu", False, offload)]


def grad_under_hooks(model, make_hooks) -> tuple:
    """One float64 forward of `model` (a float64 Linear -> GRL -> Linear, or its compiled form)
    under the hooks `make_hooks()` gives (`offload_hooks`), backward after them: the input
    gradient and the bytes the hooks packed."""
    x0, upstream = (t.double() for t in sample_inputs())
    hooks, packed = make_hooks()
    x = x0.requires_grad_(True)
    with hooks:
        out = model(x)
    out.backward(upstream)
    return x.grad, packed["bytes"]
