"""Building and loading a C++ operator library with `torch.utils.cpp_extension`, safely.

Not a registry row (the name starts with `_`); `impls/cpp_op.py` uses it, and the self-tests
build a deliberately broken source with it.

Why not a plain `cpp_extension.load`:
- its default build root has no torch version in it when `TORCH_EXTENSIONS_DIR` is set, so a
  library built against one torch is reloaded by another (ABI mismatch at import). The cache
  here is keyed by torch AND python version: `$GRL_CACHE_DIR/torch-<ver>-py<maj.min>/<name>-<checkout hash>`,
  default `~/.cache/grl-conformance/cpp/...`.
- a build killed half-way (Ctrl-C, a test timeout, an OOM kill) leaves its `lock` baton file
  behind, and the next `load` waits on it forever. We hold our own `fcntl.flock` around the
  build (the OS releases it when a process dies, and it serialises two xdist workers building
  at once), and while holding it a leftover `lock` can only be stale, so it is removed.
- a failed build raises a RuntimeError carrying pages of ninja output; the harness needs a
  `LoadError` whose first line says what the compiler said.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sys
import time
from pathlib import Path

from grl_conformance.core.registry import LoadError

ERROR_LINES = 3  # compiler `error:` lines quoted in a LoadError


def cache_root() -> Path:
    """Where built libraries live, one folder per (torch, python) pair."""
    import torch

    base = os.environ.get("GRL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "grl-conformance", "cpp")
    torch_version = torch.__version__.replace("+", "_")
    return Path(base) / f"torch-{torch_version}-py{sys.version_info[0]}.{sys.version_info[1]}"


def compiler_errors(output: str, limit: int = ERROR_LINES) -> list[str]:
    """The compiler's `error:` lines (gcc/clang/nvcc/ld), shortened to file:line: message."""
    lines = []
    for raw in output.splitlines():
        line = raw.strip()
        if re.search(r"\berror:|undefined reference|undefined symbol", line) and not line.startswith(
                ("ninja:", "FAILED:", "Error building")):
            lines.append(re.sub(r"^\S*/([^/\s]+:\d+)", r"\1", line))
        if len(lines) >= limit:
            break
    return lines


@contextlib.contextmanager
def _exclusive(directory: Path):
    """An OS-level lock on `directory` (dies with its holder, unlike cpp_extension's baton)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".grl-build.flock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_and_load(name: str, sources: list[str | os.PathLike], build_dir: str | os.PathLike | None = None,
                   extra_cflags: list[str] | None = None, verbose: bool = False) -> str:
    """Build (or reuse) the shared library `name` from `sources` and load it into this process.

    Returns the library path. The library registers its operators through TORCH_LIBRARY, so it
    is loaded with `is_python_module=False` (torch.ops.load_library). Any failure is a LoadError.
    """
    from torch.utils import cpp_extension

    sources = [str(Path(s).resolve()) for s in sources]
    # ninja's build file names the sources by absolute path: two checkouts sharing one folder
    # would rebuild each other's library on every load, so each checkout gets its own.
    checkout = hashlib.sha1("\0".join(sources).encode()).hexdigest()[:10]
    directory = Path(build_dir) if build_dir is not None else cache_root() / f"{name}-{checkout}"
    missing = [s for s in sources if not os.path.exists(s)]
    if missing:
        raise LoadError(f"{name}: C++ source not found: {', '.join(missing)}")
    start = time.perf_counter()
    with _exclusive(directory):
        stale = directory / "lock"
        if stale.exists():  # nobody else can be building here while we hold the flock
            stale.unlink()
        try:
            path = cpp_extension.load(name=name, sources=sources, build_directory=str(directory),
                                      extra_cflags=extra_cflags or ["-O2"], is_python_module=False,
                                      verbose=verbose)
        except Exception as exc:  # noqa: BLE001 - build and import failures alike become LoadError
            text = str(exc)
            errors = compiler_errors(text)
            head = "; ".join(errors) if errors else (text.strip().splitlines() or [type(exc).__name__])[0]
            raise LoadError(f"{name}: C++ build failed in {directory}: {head}") from None
        finally:
            if stale.exists():  # a failed build may leave the baton behind too
                stale.unlink()
    build_and_load.last_seconds = time.perf_counter() - start
    return str(path)


build_and_load.last_seconds = 0.0
