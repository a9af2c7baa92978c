"""Latency and memory sweep: what a GRL costs, phase by phase, against a one-kernel floor.

Separate from the test run (no timed asserts anywhere): `grl-harness sweep` / `make sweep`.
For every registry row, forward, backward and forward+backward are timed with
`torch.utils.benchmark` (blocked_autorange: warm-up, then blocks until `min_run_time`;
median and IQR of the blocks; the benchmark timer synchronises the accelerator itself), in
two contexts:

- `alone`: the GRL layer on a 1-D tensor of N elements that requires grad.
- `model`: `tanh(GRL(sigmoid(x)))`, an elementwise model. Its neighbours are memory-bound like
  the GRL itself, so the GRL's cost (an extra pass, a clone, a broken fusion) shows at its
  true proportion; a Linear would bury it under d flops per element of matmul.

Baselines in the same run: `identity` (`x.view_as(x)` through autograd: what any layer costs
in dispatch and graph recording), `floor` (no autograd: a view forward and `grad * -alpha`,
one kernel, 2 N b bytes, backward) and `no_grl` (the model without the GRL).
Eager and compiled (inductor, `dynamic=True`, compiled once per subject, dtype and context;
`torch._dynamo.reset()` in between, so the recompile limit never silently falls back to eager).

Memory: on CUDA the peak bytes allocated during each phase beyond what was allocated before it
(`torch.cuda.max_memory_allocated`); on CPU (no allocator statistics) the bytes the forward
keeps for backward (`saved_tensors_hooks`, deduplicated by storage) plus a fresh output
storage where the layer copies instead of returning a view. `extra_bytes` is that figure
minus the context's baseline (identity alone, no_grl in the model).

A row that fails to load, compile or run becomes an error entry; the sweep goes on.
The CUDA paths (sync, sizes to 2^26, peak memory) were written without a GPU to test them on.
"""
from __future__ import annotations

import argparse
import gc
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grl_conformance.core import env as environment
from grl_conformance.core import registry
from grl_conformance.results import latency as latency_report

ALPHA = 0.5
NEG_ALPHA = -ALPHA
PHASES = ("fwd", "bwd", "fwdbwd")
CONTEXTS = ("alone", "model")
MODES = ("eager", "compiled")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
# Every second power of two: the full CPU sweep stays well under 15 minutes on 2 cores.
SIZES_CPU = tuple(range(10, 25, 2))     # 2^10 .. 2^24
SIZES_CUDA = tuple(range(10, 27, 2))    # 2^10 .. 2^26
SIZES_QUICK = (10, 14, 18)


# --- subjects: what gets timed ------------------------------------------------------------

class View(nn.Module):
    """The identity baseline: a view through autograd, no kernel either way."""

    def forward(self, x):
        return x.view_as(x)


class Model(nn.Module):
    """`tanh(grl(sigmoid(x)))`: memory-bound neighbours on both sides of the GRL."""

    def __init__(self, grl: nn.Module | None) -> None:
        super().__init__()
        self.grl = grl

    def forward(self, x):
        h = torch.sigmoid(x)
        if self.grl is not None:
            h = self.grl(h)
        return torch.tanh(h)


def _floor_fwd(x):
    return x.view_as(x)


def _floor_bwd(g):
    return g * NEG_ALPHA


@dataclass
class Subject:
    name: str
    role: str                 # "row" or "baseline"
    context: str              # "alone" or "model"
    make: Callable[[], Any]   # -> nn.Module (autograd subjects); unused for the floor
    floor: bool = False


def subjects_for(impls: list[registry.Impl], contexts: tuple[str, ...]) -> list[Subject]:
    out: list[Subject] = []
    if "alone" in contexts:
        out.append(Subject("floor", "baseline", "alone", lambda: None, floor=True))
        out.append(Subject("identity", "baseline", "alone", View))
        for impl in impls:
            out.append(Subject(impl.name, "row", "alone",
                               lambda impl=impl: impl.api.layer(alpha=ALPHA)))
    if "model" in contexts:
        out.append(Subject("no_grl", "baseline", "model", lambda: Model(None)))
        for impl in impls:
            out.append(Subject(impl.name, "row", "model",
                               lambda impl=impl: Model(impl.api.layer(alpha=ALPHA))))
    return out


# --- configuration -------------------------------------------------------------------------

@dataclass
class Config:
    device: str
    sizes: tuple[int, ...]            # exponents of two
    dtypes: tuple[str, ...]
    modes: tuple[str, ...]
    contexts: tuple[str, ...]
    phases: tuple[str, ...]
    only: tuple[str, ...] = ()
    impl_refs: tuple[str, ...] = ()
    out: Path = Path("reports")
    min_run_time: float = 0.1
    threads: int = 0
    kernels: bool = True
    plot: bool = True
    quick: bool = False
    verbose: bool = True

    def as_json(self) -> dict:
        return {"device": self.device, "sizes": [f"2^{e}" for e in self.sizes],
                "dtypes": list(self.dtypes), "modes": list(self.modes),
                "contexts": list(self.contexts), "phases": list(self.phases),
                "only": list(self.only), "min_run_time_s": self.min_run_time,
                "threads": self.threads, "quick": self.quick, "alpha": ALPHA,
                "model": "tanh(GRL(sigmoid(x))), x of N elements (1-D)",
                "compile": "torch.compile(backend='inductor', dynamic=True), once per subject, "
                           "dtype and context; donated_buffer=False"}


# --- measurement ---------------------------------------------------------------------------

def _log(cfg: Config, text: str) -> None:
    if cfg.verbose:
        print(text, file=sys.stderr, flush=True)


def _error_text(exc: BaseException) -> str:
    from grl_conformance.core.outcome import describe_exception, one_line

    return one_line(describe_exception(exc), 300)


MIN_BLOCKS = 5


def _timer(fn: Callable[[], Any], cfg: Config):
    """blocked_autorange (warm-up, block size, blocks until min_run_time), topped up to
    MIN_BLOCKS blocks where one call outlasts min_run_time, so median and IQR mean something."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=cfg.threads,
                            label="grl-sweep")
    m = timer.blocked_autorange(min_run_time=cfg.min_run_time)
    if len(m.raw_times) >= MIN_BLOCKS:
        return m
    raw = list(m.raw_times)
    while len(raw) < MIN_BLOCKS:
        extra = timer.timeit(number=m.number_per_run)
        raw.extend(extra.raw_times)
    return benchmark.Measurement(m.number_per_run, raw, m.task_spec, m.metadata)


class SavedBytes:
    """Bytes the forward keeps for backward, each storage counted once."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t):
        try:
            storage = t.untyped_storage()
            self.storages[storage.data_ptr()] = storage.nbytes()
        except Exception:  # noqa: BLE001 - a tensor subclass without storage: count nothing
            pass
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def _fresh_bytes(y, x) -> int:
    """Bytes of a new output storage (0 where the output is a view of the input)."""
    if not isinstance(y, torch.Tensor):
        return 0
    ys, xs = y.untyped_storage(), x.untyped_storage()
    return 0 if ys.data_ptr() == xs.data_ptr() else ys.nbytes()


def _cpu_memory(call: Callable[[torch.Tensor], Any], x: torch.Tensor) -> int:
    """Saved-for-backward bytes plus a fresh output storage, for one forward (the CPU memory
    figure; recorded as `saved_bytes` on every device)."""
    saved = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        y = call(x)
    fresh = _fresh_bytes(y, x)
    if isinstance(y, torch.Tensor) and y.untyped_storage().data_ptr() in saved.storages:
        fresh = 0  # the output is itself saved (tanh saves its result): count it once
    total = saved.total + fresh
    del y
    return total


def _cuda_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated while `fn` runs, beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out
    return int(peak)


def _phase_fns(subject: Subject, call: Any, x: torch.Tensor, g: torch.Tensor,
               floor_fns: tuple[Callable, Callable]) -> dict[str, Callable[[], Any]]:
    """The three timed statements for one subject at one size."""
    if subject.floor:
        f_fwd, f_bwd = floor_fns
        xd = x.detach()
        return {"fwd": lambda: f_fwd(xd), "bwd": lambda: f_bwd(g),
                "fwdbwd": lambda: (f_fwd(xd), f_bwd(g))}
    y = call(x)  # kept for the backward-only statement (graph retained)

    def fwd():
        return call(x)

    def bwd():
        return torch.autograd.grad(y, x, g, retain_graph=True)

    def fwdbwd():
        return torch.autograd.grad(call(x), x, g)

    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}


def _floor_fns(mode: str) -> tuple[Callable, Callable]:
    if mode == "compiled":
        return (torch.compile(_floor_fwd, dynamic=True), torch.compile(_floor_bwd, dynamic=True))
    return _floor_fwd, _floor_bwd


def _prepare(subject: Subject, mode: str, device: str, dtype: torch.dtype) -> Any:
    if subject.floor:
        return None
    module = subject.make().to(device=device)
    if mode == "compiled":
        return torch.compile(module, backend="inductor", dynamic=True)
    return module


def floor_bytes(phase: str, n: int, itemsize: int) -> int:
    """Bytes the floor moves: a view forward moves none, the backward reads and writes N b."""
    return 0 if phase == "fwd" else 2 * n * itemsize


def run(cfg: Config) -> dict:
    """The whole sweep; returns the JSON document (also written when `write` is called)."""
    if cfg.threads <= 0:
        cfg.threads = torch.get_num_threads()
    # The backward-only statement runs one compiled backward many times (retain_graph=True),
    # which donated buffers forbid; they save an allocation, not a pass over memory, and the
    # floor allocates its output too. One subject per dynamo cache: a raised limit is a guard.
    from torch._dynamo import config as dynamo_config
    from torch._functorch import config as functorch_config

    with functorch_config.patch(donated_buffer=False), dynamo_config.patch(recompile_limit=64):
        return _run(cfg)


def _run(cfg: Config) -> dict:
    start = time.time()
    rows: list[dict] = []
    errors: list[dict] = []
    try:
        impls = registry.collect(list(cfg.impl_refs), list(cfg.only) or None)
    except registry.LoadError as exc:
        raise SystemExit(f"grl-sweep: {exc}") from None
    loaded: list[registry.Impl] = []
    for impl in impls:
        meta = {"name": impl.name, "kind": impl.kind, "origin": impl.origin}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                impl.api  # noqa: B018 - loading is the point: a load failure is recorded
            meta["status"] = "ok"
            loaded.append(impl)
        except Exception as exc:  # noqa: BLE001 - a broken row is an error entry
            meta["status"] = "error"
            meta["error"] = _error_text(exc)
            errors.append({"subject": impl.name, "stage": "load", "error": meta["error"]})
        rows.append(meta)

    results: list[dict] = []
    compile_s: list[dict] = []
    subjects = subjects_for(loaded, cfg.contexts)
    for mode in cfg.modes:
        for dname in cfg.dtypes:
            dtype = DTYPES[dname]
            itemsize = torch.empty((), dtype=dtype).element_size()
            floor_fns = _floor_fns(mode)
            for subject in subjects:
                _measure_subject(cfg, subject, mode, dname, dtype, itemsize, floor_fns,
                                 results, errors, compile_s)
            if mode == "compiled":
                torch._dynamo.reset()
    _derive(results)
    kernels: dict[str, dict] = {}
    if cfg.kernels and "compiled" in cfg.modes:
        for impl in loaded:
            try:
                kernels[impl.name] = extra_kernels(impl.api.layer(alpha=ALPHA), cfg.device)
            except Exception as exc:  # noqa: BLE001
                kernels[impl.name] = {"error": _error_text(exc)}
    env = environment.describe()
    if cfg.device == "cpu" and env["device_slug"] != "cpu":  # --device cpu on a CUDA machine
        import os
        import platform

        env["device_slug"] = "cpu"
        env["device"] = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    doc = {
        "schema": latency_report.SCHEMA,
        "kind": "grl-latency-sweep",
        "torch": env["torch"],
        "python": env["python"],
        "device": env["device"],
        "device_slug": env["device_slug"],
        "created": env["created"],
        "duration_s": 0.0,
        "config": cfg.as_json(),
        "rows": rows,
        "results": results,
        "errors": errors,
        "compile_s": compile_s,
        "kernels": kernels,
    }
    doc["summary"] = latency_report.summarise(doc)
    doc["duration_s"] = round(time.time() - start, 1)
    return doc


def _measure_subject(cfg: Config, subject: Subject, mode: str, dname: str, dtype: torch.dtype,
                     itemsize: int, floor_fns, results: list, errors: list,
                     compile_s: list) -> None:
    where = f"{mode} {dname} {subject.context} {subject.name}"
    key = {"subject": subject.name, "role": subject.role, "context": subject.context,
           "mode": mode, "dtype": dname}
    if mode == "compiled":
        torch._dynamo.reset()  # fresh cache per subject: no silent fallback at the limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call = _prepare(subject, mode, cfg.device, dtype)
    except Exception as exc:  # noqa: BLE001
        errors.append({**key, "stage": "build", "error": _error_text(exc)})
        _log(cfg, f"  {where}: build error: {errors[-1]['error']}")
        return
    counters = torch._dynamo.utils.counters
    counters.clear()
    compile_entry: dict | None = None
    for index, exp in enumerate(cfg.sizes):
        n = 1 << exp
        stage = f"2^{exp}"
        try:
            base = torch.randn(n, device=cfg.device, dtype=dtype)
            x = base.clone().requires_grad_(True)
            g = torch.randn(n, device=cfg.device, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if index == 0:  # warm-up; in compiled mode this compiles forward and backward
                    stage = "compile" if mode == "compiled" else stage
                    t0 = time.perf_counter()
                    if subject.floor:
                        floor_fns[0](x.detach()), floor_fns[1](g)
                    else:
                        torch.autograd.grad(call(x), x, g)
                    if mode == "compiled":
                        compile_entry = {**key, "seconds": round(time.perf_counter() - t0, 2),
                                         "graphs": counters["stats"]["unique_graphs"],
                                         "graph_breaks": sum(counters["graph_break"].values())}
                        compile_s.append(compile_entry)
                    stage = f"2^{exp}"
                fns = _phase_fns(subject, call, x, g, floor_fns)
                saved = 0 if subject.floor else _cpu_memory(call, x)
                for phase in cfg.phases:
                    m = _timer(fns[phase], cfg)
                    entry = {**key, "phase": phase, "exp": exp, "n": n,
                             "median_s": m.median, "iqr_s": m.iqr, "runs": len(m.times),
                             "number_per_run": m.number_per_run,
                             "floor_bytes": floor_bytes(phase, n, itemsize)}
                    entry["saved_bytes"] = saved  # kept for backward + fresh output storage
                    if cfg.device == "cpu":
                        entry["mem_bytes"] = saved
                        entry["mem_kind"] = "saved+fresh"
                    else:
                        entry["mem_bytes"] = _cuda_peak(fns[phase])
                        entry["mem_kind"] = "cuda_peak"
                    results.append(entry)
            del fns
        except Exception as exc:  # noqa: BLE001 - one failing subject never stops the sweep
            errors.append({**key, "stage": stage, "error": _error_text(exc)})
            _log(cfg, f"  {where} {stage}: error: {errors[-1]['error']}")
            break
        finally:
            x = g = base = None
            gc.collect()
            if cfg.device == "cuda":
                torch.cuda.empty_cache()
        if compile_entry is not None:  # graphs compiled so far: more than at 2^first = recompiles
            compile_entry["graphs_after_sweep"] = counters["stats"]["unique_graphs"]
        last = [r for r in results if r["exp"] == exp and all(r[k] == v for k, v in key.items())]
        _log(cfg, f"  {where} 2^{exp}: " + ", ".join(
            f"{r['phase']} {latency_report.fmt_time(r['median_s'])}" for r in last))


def _derive(results: list[dict]) -> None:
    """Ratios, bandwidth and extra memory, against the baselines of the same run."""
    def index(name, context):
        return {(r["mode"], r["dtype"], r["phase"], r["exp"]): r for r in results
                if r["subject"] == name and r["context"] == context and r["role"] == "baseline"}

    floor = index("floor", "alone")
    ident = index("identity", "alone")
    nogrl = index("no_grl", "model")
    for r in results:
        k = (r["mode"], r["dtype"], r["phase"], r["exp"])
        f = floor.get(k)
        # bandwidth at the floor's bytes: for the floor and the rows (the identity skips the work)
        r["gbps"] = (r["floor_bytes"] / r["median_s"] / 1e9
                     if r["context"] == "alone" and r["subject"] != "identity"
                     and r["floor_bytes"] and r["median_s"] > 0 else None)
        if r["context"] == "alone":
            r["ratio_floor"] = r["median_s"] / f["median_s"] if f else None
            base = ident.get(k)
        else:
            b = nogrl.get(k)
            r["ratio_model"] = r["median_s"] / b["median_s"] if b else None
            # the GRL's marginal cost inside the model, in units of the floor (0 = fused away)
            r["overhead_floor"] = ((r["median_s"] - b["median_s"]) / f["median_s"]
                                   if b and f and f["median_s"] > 0 else None)
            base = b
        r["extra_bytes"] = (r["mem_bytes"] - base["mem_bytes"]
                            if base is not None and r.get("mem_bytes") is not None
                            and base.get("mem_bytes") is not None else None)


# --- inductor kernel count -----------------------------------------------------------------

_KERNEL_CALL = re.compile(
    r"^\s*(?:\w+\s*=\s*)?("
    r"cpp_fused_\w+\(|"                     # inductor C++ kernel (CPU)
    r"triton_\w+\.run\(|"                   # inductor Triton kernel (CUDA)
    r"extern_kernels\.\w+\(|"               # aten fallback (mm, addmm, ...)
    r"torch\.ops\.\w+\.\w+(?:\.\w+)?\(|"    # an opaque op (custom op, aten fallback)
    r"aten\.\w+(?:\.\w+)?\(|"
    r"\w+_kernel_\w*\(|kernel\d*\()", re.MULTILINE)


def kernels_in(code: str) -> int:
    """Kernel launches in inductor output code: the lines calling a kernel inside `call()`."""
    total = 0
    for body in re.findall(r"def call\((?:self, )?args\):\n(.*?)(?=\n\S|\Z)", code,
                           flags=re.S) or [code]:
        total += len(_KERNEL_CALL.findall(body))
    return total


def inductor_kernels(module: nn.Module, x: torch.Tensor) -> int:
    """Kernels inductor runs for one forward+backward of `module` on `x` (caches disabled)."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    compiled = torch.compile(module, backend="inductor", dynamic=False)
    xg = x.detach().clone().requires_grad_(True)

    def step():
        y = compiled(xg)
        return torch.autograd.grad(y, xg, torch.ones_like(y))

    with warnings.catch_warnings(), torch._inductor.config.patch(force_disable_caches=True):
        warnings.simplefilter("ignore")
        _, codes = run_and_get_code(step)
    torch._dynamo.reset()
    return sum(kernels_in(c) for c in codes)


def extra_kernels(layer: nn.Module, device: str = "cpu", n: int = 1 << 12,
                  dtype: torch.dtype = torch.float32) -> dict:
    """Extra inductor kernels the GRL costs in `tanh(GRL(sigmoid(x)))`, forward+backward.

    0 means the GRL's scale was fused into its neighbours; an opaque op adds its own call
    and splits the fused kernel around it. Exposed for the compile checks (`compile.fusion`).
    """
    x = torch.randn(n, device=device, dtype=dtype)
    with_grl = inductor_kernels(Model(layer).to(device), x)
    without = inductor_kernels(Model(None).to(device), x)
    return {"with": with_grl, "without": without, "extra": with_grl - without}


# --- command line --------------------------------------------------------------------------

def parse_sizes(text: str) -> tuple[int, ...]:
    """`10:24:2` (exponents, inclusive, step) or `10,12,16` or `2^10,2^20`."""
    text = text.replace("2^", "")
    if ":" in text:
        parts = [int(p) for p in text.split(":")]
        lo, hi = parts[0], parts[1]
        step = parts[2] if len(parts) > 2 else 1
        return tuple(range(lo, hi + 1, step))
    return tuple(int(p) for p in text.split(",") if p.strip())


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def config_from_args(args: argparse.Namespace) -> Config:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("grl-sweep: --device cuda but torch.cuda.is_available() is False")
    if args.sizes:
        sizes = parse_sizes(args.sizes)
    else:
        sizes = SIZES_QUICK if args.quick else (SIZES_CUDA if device == "cuda" else SIZES_CPU)
    dtypes = _csv(args.dtypes) or (("float32",) if args.quick else ("float32", "bfloat16"))
    modes = _csv(args.modes) or MODES
    contexts = _csv(args.contexts) or CONTEXTS
    phases = _csv(args.phases) or PHASES
    for name, values, allowed in (("dtype", dtypes, DTYPES), ("mode", modes, MODES),
                                  ("context", contexts, CONTEXTS), ("phase", phases, PHASES)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise SystemExit(f"grl-sweep: unknown {name} {', '.join(bad)}; "
                             f"one of {', '.join(allowed)}")
    only = tuple(n.strip() for a in args.only for n in a.split(",") if n.strip())
    return Config(device=device, sizes=sizes, dtypes=dtypes, modes=modes, contexts=contexts,
                  phases=phases, only=only, impl_refs=tuple(args.impl), out=Path(args.out),
                  min_run_time=args.min_run_time or (0.05 if args.quick else 0.1),
                  threads=args.threads, kernels=not args.no_kernels, plot=not args.no_plot,
                  quick=args.quick, verbose=not args.quiet)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    _log(cfg, f"grl-sweep: {cfg.device}, sizes 2^{cfg.sizes[0]}..2^{cfg.sizes[-1]} "
              f"({len(cfg.sizes)}), {', '.join(cfg.dtypes)}, {', '.join(cfg.modes)}")
    doc = run(cfg)
    for path in latency_report.write(doc, cfg.out, plot_png=cfg.plot):
        print(f"written: {path}")
    if doc["errors"]:
        print(f"{len(doc['errors'])} error entries (see the report)")
    return 0


__all__ = ["run", "Config", "extra_kernels", "inductor_kernels", "kernels_in", "main",
           "parse_sizes", "Model", "View"]
