"""What the harness does differently per torch release, in one place (torch 2.6 to 2.14).

Each helper probes for the feature, never for a version number, so a patch release or a
backport takes the right path. Where a torch lacks what a column needs, the helper raises
`Skipped` with "needs torch >= X" (the first release that has it, measured: reports/history/):
the column is not judged there, and no row is charged. Where the harness's own use of torch is
broken (a private setting renamed by a future torch), the column's control fails and the column
is not judged either (core/controls.py). The self-tests reach the paths the CI torch can; the
committed history (`make history`) is the evidence for the others.
"""
from __future__ import annotations

import contextlib

from grl_conformance.core.outcome import Skipped

# dynamo's "raise when the recompile limit is hit" switch (otherwise it silently runs eager)
_RECOMPILE_LIMIT_SWITCHES = ("fail_on_recompile_limit_hit",  # torch >= 2.7
                             "fail_on_cache_limit_hit")  # torch 2.6


class HarnessGap(RuntimeError):
    """This torch lacks something the harness itself relies on: a harness bug, not the row's."""


def needs(version: str, what: str) -> Skipped:
    """The skip for a column this torch cannot run: `raise compat.needs("2.7", "...")`."""
    import torch

    return Skipped(f"needs torch >= {version}: {what} (this is torch {torch.__version__})",
                   summary=f"needs torch >= {version}")


def strict_dynamo_config() -> dict:
    """dynamo settings under which a compile cell cannot silently run eager instead.

    suppress_errors (TORCHDYNAMO_SUPPRESS_ERRORS=1) would turn a compile failure into an eager
    run; a recompile-limit hit would too, unless its switch (renamed in 2.7) is on.
    """
    import torch._dynamo.config as config

    for name in _RECOMPILE_LIMIT_SWITCHES:
        if hasattr(config, name):
            return {name: True, "suppress_errors": False}
    raise HarnessGap(f"torch._dynamo.config has none of {', '.join(_RECOMPILE_LIMIT_SWITCHES)}: "
                     "the harness cannot make a recompile-limit hit raise on this torch")


@contextlib.contextmanager
def fresh_dynamo(**config):
    """Clean dynamo state in (caches and counters), clean state out, and `strict_dynamo_config`
    (a recompile-limit hit or a compile error raises instead of running eager) in between.
    Yields dynamo's counters. The one way every compile column, the compiled DANN and the
    compiled DDP rank enter dynamo."""
    import torch
    from torch._dynamo.utils import counters

    strict = strict_dynamo_config()
    torch._dynamo.reset()
    counters.clear()
    try:
        with torch._dynamo.config.patch(**strict, **config):
            yield counters
    finally:
        torch._dynamo.reset()


def fsdp2_on(device_type: str) -> None:
    """FSDP2 (`fully_shard`) on CPU records events on `torch.cpu.Stream`, which has no
    `record_event` before torch 2.7 (the backward step fails inside FSDP)."""
    import torch

    if device_type == "cpu" and not hasattr(torch.cpu.Stream, "record_event"):
        raise needs("2.7", "FSDP2 on CPU (torch.cpu.Stream.record_event)")


def graph_break_id(exc: BaseException) -> str:
    """Dynamo's id for a graph break and its first hint, where this torch has the registry
    (`torch/_dynamo/graph_break_registry.json`, recent releases): "graph break GB0123 (<type>):
    hint: ...", so a user can look the cause up; "" where it has none."""
    import json
    import os

    import torch._dynamo

    gb_type = ""
    seen = exc
    while seen is not None and not gb_type:
        gb_type = getattr(seen, "gb_type", "") or ""
        seen = seen.__cause__
    path = os.path.join(os.path.dirname(torch._dynamo.__file__), "graph_break_registry.json")
    if not gb_type or not os.path.exists(path):
        return ""
    try:
        with open(path) as fh:
            registry = json.load(fh)
    except (OSError, ValueError):
        return ""
    for gb_id, entries in registry.items():
        for entry in entries:
            if entry.get("Gb_type") == gb_type:
                hints = entry.get("Hints") or []
                hint = " ".join(str(hints[0]).split())[:160] if hints else ""
                return f"graph break {gb_id} ({gb_type})" + (f"; hint: {hint}" if hint else "")
    return f"graph break type {gb_type!r} (not in this torch's registry)"


def compiled_autograd(compiler):
    """The context manager that compiles every backward in it with `compiler` (compiled
    autograd): `torch._dynamo.compiled_autograd._enable` on recent torch, `enable` on older."""
    from torch._dynamo import compiled_autograd as ca

    enable = getattr(ca, "_enable", None) or getattr(ca, "enable", None)
    if enable is None:
        raise HarnessGap("torch._dynamo.compiled_autograd has neither _enable nor enable")
    return enable(compiler)


def no_aot_autograd_cache():
    """AOTAutograd's cache off, where this torch has it: on torch 2.7 a compiled backward loaded
    from that cache refuses compiled autograd ("saved by AOTAutogradCache, which does not
    support ..."), so whether a cell passed would depend on what an earlier run left in the
    cache. A context manager; the setting is restored."""
    import contextlib

    import torch._functorch.config as functorch_config

    if not hasattr(functorch_config, "enable_autograd_cache"):
        return contextlib.nullcontext()
    return functorch_config.patch(enable_autograd_cache=False)
