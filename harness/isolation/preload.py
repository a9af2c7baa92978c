"""Imported first by the session's forkserver (isolation/server.py, PRELOAD): what the matrix
needs pinned, and work every row's child would otherwise repeat, done once before the fork so
the children inherit it. Only the server process is changed: the user's pytest process never.

- torch 2.13 turns a custom op whose output aliases its input from a warning into an error when
  the environment variable CI is set (`torch._functorch.config.error_on_custom_op_aliasing`
  defaults to bool($CI)). The matrix must say what users get, not what a CI runner gets, and
  must not change with the machine it runs on: the user default is pinned here, before torch is
  imported, for the sandbox's processes alone. Set the variable yourself to see the strict
  behaviour.
- inductor caches its compiled code under the temp directory by default; a run must leave
  nothing there, so the sandbox's processes cache under the user's cache directory instead
  ($XDG_CACHE_HOME or ~/.cache, then grl-conformance/torchinductor), which also keeps later runs
  warm. TORCHINDUCTOR_CACHE_DIR set by the caller wins. One path ignores that variable: the
  precompiled headers' directory, fixed at import from the temp directory
  (`torch._inductor.codecache._HEADER_DIR` and its lock directory); it is moved beside the cache here.
- inductor probes the CPU's vector ISA on its first compile in a process by compiling and
  running six small programs (about 0.9 s on 2 cores, measured with cProfile on torch 2.13); the
  result is cached per process. Probing here runs only subprocesses and leaves no thread behind.
- the first torch.compile in a process pays one-time setup (lazy imports, the C++ compiler's
  checks, dynamo's and AOTAutograd's first-use caches): 0.6-0.8 s per forked child for its first
  inductor compile, 0.1 s once the server compiled one function (forkserver children, torch 2.13,
  2 cores, warm disk cache). So the server compiles and runs a small forward and backward once,
  with no compile workers and on 4 elements, too few for inductor to open an OpenMP region, then
  resets dynamo: a child starts with no compiled code. The thread count is left alone: calling
  `torch.set_num_threads` in the server makes the OpenMP pool invalid in its children, whose
  first backward then aborts on the 2.15.0 CUDA wheel ("Invalid thread pool", measured). The
  function passes through an autograd.Function, as most rows do: dynamo's first trace of one
  costs a child another 0.4 s on its first inductor compile otherwise (0.66-0.92 s against
  0.24-0.46 s for naive_function, pytorch_revgrad and the reference control, torch 2.13).
- the server holds some 440,000 objects once the rest of PRELOAD (isolation/server.py) is imported,
  and every full garbage collection in every child walked them all: 1.5-2.3 s of a row's eager
  and compile cells went to the collector (0.3-0.45 s after the freeze; torch 2.13, 2 cores). So
  this module imports the rest of PRELOAD itself, warms up, collects once, and freezes what is
  left (`gc.freeze()`, as the gc docs advise for a process that forks without exec): the
  children's collections skip the inherited objects and no longer write to their pages. What a
  child creates is collected as usual.
- on the 2.14.1 and 2.15.0 CUDA wheels (also on a machine without a GPU), a process that ran a
  backward after compiling leaves its forked children unable to run any backward ("Unable to
  handle autograd's threading in combination with fork-based multiprocessing"); a compiled
  forward under no_grad does not (2.13.0+cpu and 2.9.1+cu128 are fine either way). So the warm-up
  comes in levels (core/procs.py, WARMUPS, chosen through GRL_WARMUP as the server starts): the
  harness proves each with a forked child's backward and drops to the next when it fails. DID
  says what was done, for the run's header.
"""
from __future__ import annotations

import gc
import importlib
import os

PINNED_ENV = {"TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING": "0"}


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "grl-conformance", "torchinductor")


def pin_environment() -> None:
    """Set PINNED_ENV and the inductor cache where the caller has not (sandbox processes only)."""
    for name, value in PINNED_ENV.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir())


def _move_header_dir() -> None:
    try:
        from torch._inductor import codecache

        if isinstance(getattr(codecache, "_HEADER_DIR", None), str):
            codecache._HEADER_DIR = os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"],
                                                 "precompiled_headers")
            codecache._HEADER_LOCK_DIR = os.path.join(codecache._HEADER_DIR, "locks")
    except Exception:  # noqa: BLE001 - another torch: its headers stay where it puts them
        pass


def _import_the_rest() -> None:
    """PRELOAD after this module, now, so the freeze below covers it (multiprocessing's own
    imports of those names then find them loaded)."""
    from grl_conformance.isolation.server import PRELOAD

    for name in PRELOAD:
        if name != __name__:
            try:
                importlib.import_module(name)
            except ImportError:  # skipped, as multiprocessing does; a self-test names it
                pass


def _probe_vector_isa() -> None:
    try:
        from torch._inductor import cpu_vec_isa

        cpu_vec_isa.pick_vec_isa()
    except Exception:  # noqa: BLE001 - a warm-up only: a child that needs it probes again
        pass


def _first_compile() -> str:
    """Compile and run the warm-up function at the level the server was started with (the
    harness sets WARMUP_VAR); returns what was done, in words."""
    from grl_conformance.core.procs import WARMUP_VAR, WARMUPS

    level = os.environ.get(WARMUP_VAR, "full")
    if level not in WARMUPS or level == "none":
        return WARMUPS["none"]
    try:
        import torch
        import torch._inductor.config as inductor_config

        class Negate(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                return t.view_as(t)

            @staticmethod
            def backward(ctx, grad):
                return -grad

        def warm(x):
            return Negate.apply(x.sin() * 0.5).cos()

        workers = inductor_config.compile_threads
        inductor_config.compile_threads = 1
        try:
            x = torch.linspace(-1.0, 1.0, 4, requires_grad=True)
            compiled = torch.compile(warm, backend="inductor", fullgraph=True)
            if level == "full":
                compiled(x).sum().backward()
            else:
                with torch.no_grad():
                    compiled(x)
        finally:
            torch._dynamo.reset()
            inductor_config.compile_threads = workers
        return WARMUPS[level]
    except Exception as exc:  # noqa: BLE001 - a warm-up only: each child then pays its first compile
        return f"{WARMUPS[level]}, which raised {type(exc).__name__} (children compile cold)"


pin_environment()
_move_header_dir()
_import_the_rest()
_probe_vector_isa()
DID = _first_compile()
gc.collect()
gc.freeze()
