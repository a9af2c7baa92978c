"""Latency sweep reports: the sweep's JSON document in, Markdown / PNG / a matrix column out.

Torch-free (like `grl_conformance.results.report`): the pytest plugin uses `annotate` to put each row's
headline overhead into the compatibility matrix without importing the sweep.
matplotlib is optional (`pip install -e .[plot]`): without it no PNG, with a message.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tabulate import tabulate

SCHEMA = 1
HEADLINE = {"mode": "eager", "phase": "fwdbwd", "context": "alone", "exp": 24}
PHASE_TEXT = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward+backward"}
LATEST = "latency-latest.json"


# --- formatting ----------------------------------------------------------------------------

def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"×{ratio:.2f}" if ratio < 100 else f"×{ratio:.0f}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{sign}{n / scale:.3g} {unit}"
    return f"{sign}{n} B"


def slug_of(doc: dict) -> str:
    return f"{doc['torch'].split('+')[0]}-{doc['device_slug']}"


# --- summary -------------------------------------------------------------------------------

def _pick(results: list[dict], **want) -> dict | None:
    for r in results:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def headline_exp(doc: dict) -> int | None:
    """2^24 where swept (comparable across devices), else the largest size swept."""
    exps = sorted({r["exp"] for r in doc["results"]})
    if not exps:
        return None
    return HEADLINE["exp"] if HEADLINE["exp"] in exps else exps[-1]


QUOTED_SMALL_EXP = 14  # a DANN-sized activation: 2^14 elements (e.g. 32 x 512)


def quoted_exps(doc: dict) -> list[int]:
    """The sizes the README and the matrix quote: 2^14 (where swept) and the headline size."""
    exps = sorted({r["exp"] for r in doc["results"]})
    small = QUOTED_SMALL_EXP if QUOTED_SMALL_EXP in exps else (exps[0] if exps else None)
    return sorted({e for e in (small, headline_exp(doc)) if e is not None})


def speed_text(fwdbwd_s: dict | None) -> str:
    """`18.1 µs · 16.9 ms` (eager, by size), then the compiled figures after ` / `."""
    if not fwdbwd_s:
        return "-"

    def fmt(v):
        return "-" if v is None else (f"{v * 1e6:.1f} µs" if v < 1e-3 else f"{v * 1e3:.1f} ms")

    parts = []
    for mode in ("eager", "compiled"):
        by_exp = fwdbwd_s.get(mode) or {}
        if by_exp:
            parts.append(" · ".join(fmt(by_exp[e]) for e in sorted(by_exp, key=int)))
    return " / ".join(parts) or "-"


def summarise(doc: dict) -> dict:
    """Per row, at one large size: the figures the README and the matrix quote."""
    results = doc["results"]
    exp = headline_exp(doc)
    dtypes = doc["config"]["dtypes"]
    dtype = "float32" if "float32" in dtypes else (dtypes[0] if dtypes else None)
    rows: dict[str, dict] = {}
    for meta in doc["rows"]:
        name = meta["name"]
        entry: dict = {"status": meta.get("status", "ok")}
        if meta.get("status") == "error":
            entry["error"] = meta.get("error", "")
            rows[name] = entry
            continue
        base = {"subject": name, "role": "row", "dtype": dtype, "exp": exp}
        for mode in ("eager", "compiled"):
            alone = _pick(results, **base, mode=mode, phase="fwdbwd", context="alone")
            model = _pick(results, **base, mode=mode, phase="fwdbwd", context="model")
            bwd = _pick(results, **base, mode=mode, phase="bwd", context="alone")
            entry[mode] = {
                "ratio_floor": alone.get("ratio_floor") if alone else None,
                "median_s": alone.get("median_s") if alone else None,
                "bwd_gbps": bwd.get("gbps") if bwd else None,
                "model_ratio": model.get("ratio_model") if model else None,
                "model_overhead_floor": model.get("overhead_floor") if model else None,
                "extra_bytes": alone.get("extra_bytes") if alone else None,
            }
        # The sizes DANN trains at (a batch of 32-256 rows of 256-2048 features is 2^13-2^19
        # elements) and the headline: eager and compiled forward+backward, seconds.
        entry["fwdbwd_s"] = {
            mode: {str(e): r.get("median_s") for e in quoted_exps(doc)
                   if (r := _pick(results, subject=name, role="row", dtype=dtype, exp=e, mode=mode,
                                  phase="fwdbwd", context="alone"))}
            for mode in ("eager", "compiled")}
        kern = (doc.get("kernels") or {}).get(name)
        if kern is not None:
            entry["kernels"] = kern
        errs = [e for e in doc["errors"] if e.get("subject") == name]
        if errs:
            entry["errors"] = len(errs)
        rows[name] = entry
    ranked = [(v["eager"]["ratio_floor"], n) for n, v in rows.items()
              if v.get("eager", {}).get("ratio_floor") is not None]
    return {"at": {"mode": "eager", "phase": "fwdbwd", "context": "alone", "dtype": dtype,
                   "exp": exp, "device": doc["device_slug"]},
            "label": f"eager fwd+bwd {dtype} 2^{exp}" if exp is not None else "",
            "best": min(ranked)[1] if ranked else None,
            "rows": rows}


# --- Markdown ------------------------------------------------------------------------------

def _detail_table(doc: dict, mode: str, dtype: str, context: str, phase: str) -> str | None:
    results = [r for r in doc["results"] if (r["mode"], r["dtype"], r["context"], r["phase"])
               == (mode, dtype, context, phase)]
    if not results:
        return None
    exps = sorted({r["exp"] for r in results})
    names: list[str] = []
    for r in results:
        if r["subject"] not in names:
            names.append(r["subject"])
    index = {(r["subject"], r["exp"]): r for r in results}
    ratio_key = "ratio_floor" if context == "alone" else "ratio_model"
    rows = []
    for name in names:
        row = [f"`{name}`"]
        for e in exps:
            r = index.get((name, e))
            if r is None:
                row.append("-")
                continue
            text = f"{fmt_time(r['median_s'])} ±{fmt_time(r['iqr_s'])} {fmt_ratio(r.get(ratio_key))}"
            if r.get("gbps"):
                text += f" {r['gbps']:.3g} GB/s"
            row.append(text)
        rows.append(row)
    return tabulate(rows, headers=["subject"] + [f"2^{e}" for e in exps], tablefmt="github")


def render_markdown(doc: dict) -> str:
    cfg = doc["config"]
    summary = doc.get("summary") or summarise(doc)
    at = summary["at"]
    lines = [
        f"# GRL latency sweep: torch {doc['torch']}, {doc['device']}",
        "",
        tabulate([["torch", doc["torch"]], ["python", doc["python"]], ["device", doc["device"]],
                  ["torch threads", cfg["threads"]], ["created", doc["created"]],
                  ["duration", f"{doc['duration_s']} s"],
                  ["sizes", ", ".join(cfg["sizes"])], ["dtypes", ", ".join(cfg["dtypes"])],
                  ["modes", ", ".join(cfg["modes"])],
                  ["timing", f"torch.utils.benchmark blocked_autorange, {cfg['min_run_time_s']} s "
                             "per point: median ± IQR"],
                  ["model", cfg["model"]], ["compile", cfg["compile"]],
                  ["alpha", cfg["alpha"]]],
                 headers=["environment", ""], tablefmt="github"),
        "",
        "How to read it (docs/sweep.md has more): `floor` is the least any GRL can cost: a view "
        "forward (no bytes moved) and one kernel `grad * -alpha` backward (2 N b bytes). "
        "`×r` is a median divided by the floor's median for the same phase, dtype, mode and "
        "size (alone) or by the model without a GRL (`no_grl`, model tables). GB/s is the "
        "floor's bytes divided by the median. Memory: "
        + ("peak bytes allocated during the phase (torch.cuda.max_memory_allocated)."
           if doc["device_slug"].startswith("cuda") else
           "bytes kept for backward (saved_tensors_hooks) plus a fresh output storage; "
           "transient buffers are not visible on CPU."),
        "",
        f"## Summary at 2^{at['exp']} elements, {at['dtype']}, forward+backward",
        "",
    ]
    srows = []
    for name, v in summary["rows"].items():
        if v.get("status") == "error":
            srows.append([f"`{name}`", "error: " + _esc(v.get("error", ""))] + ["-"] * 7)
            continue
        e, c = v.get("eager", {}), v.get("compiled", {})
        k = v.get("kernels") or {}
        kern = (f"{k['extra']:+d} ({k['with']} vs {k['without']})" if "extra" in k
                else ("error" if "error" in k else "-"))
        srows.append([
            f"`{name}`" + (" (best)" if name == summary.get("best") else ""),
            fmt_ratio(e.get("ratio_floor")), fmt_ratio(c.get("ratio_floor")),
            "-" if e.get("bwd_gbps") is None else f"{e['bwd_gbps']:.3g}",
            _floors(e.get("model_overhead_floor")), _floors(c.get("model_overhead_floor")),
            kern, fmt_bytes(e.get("extra_bytes")),
            str(v.get("errors", 0)),
        ])
    lines += [
        tabulate(srows, headers=["impl", "eager ÷ floor", "compiled ÷ floor", "eager bwd GB/s",
                                 "in model, eager (+floors)", "in model, compiled (+floors)",
                                 "inductor extra kernels (fwd+bwd)", "extra memory",
                                 "error entries"],
                 tablefmt="github"),
        "",
        "`+floors`: the GRL's marginal cost inside the model, (model − no_grl) ÷ floor; "
        "0 means it was fused away, 1 means one floor kernel. Noise can make it slightly "
        "negative.",
        "",
    ]
    if doc["errors"]:
        lines += ["## Error entries", "",
                  tabulate([[f"`{e.get('subject')}`", e.get("context", "-"), e.get("mode", "-"),
                             e.get("dtype", "-"), e["stage"], _esc(e["error"])]
                            for e in doc["errors"]],
                           headers=["subject", "context", "mode", "dtype", "stage", "error"],
                           tablefmt="github"), ""]
    if doc.get("compile_s"):
        lines += ["## Compiles (first forward+backward)", "",
                  "`graphs`: dynamo graphs after the first call, then after every size (more "
                  "means a recompile: the dynamic shape did not hold); graph breaks at the first "
                  "call.", "",
                  tabulate([[f"`{c['subject']}`", c["context"], c["dtype"], f"{c['seconds']} s",
                             f"{c.get('graphs', '-')} → {c.get('graphs_after_sweep', '-')}",
                             c.get("graph_breaks", "-")]
                            for c in doc["compile_s"]],
                           headers=["subject", "context", "dtype", "compile", "graphs",
                                    "graph breaks"], tablefmt="github"),
                  ""]
    lines += ["## Details", "",
              "Each cell: median ± IQR, ratio (alone: ÷ floor; model: ÷ no_grl), GB/s where the "
              "floor moves bytes.", ""]
    for mode in cfg["modes"]:
        for dtype in cfg["dtypes"]:
            for context in cfg["contexts"]:
                for phase in cfg["phases"]:
                    table = _detail_table(doc, mode, dtype, context, phase)
                    if table:
                        lines += [f"### {mode}, {dtype}, {context}, {PHASE_TEXT[phase]}", "",
                                  table, ""]
    mem = [r for r in doc["results"] if r["phase"] == "fwdbwd" and r["mode"] == "eager"
           and r.get("mem_bytes") is not None and r["exp"] == at["exp"]]
    if mem:
        lines += [f"## Memory at 2^{at['exp']}, eager forward+backward", "",
                  tabulate([[f"`{r['subject']}`", r["context"], r["dtype"],
                             fmt_bytes(r["mem_bytes"]), fmt_bytes(r.get("extra_bytes"))]
                            for r in mem],
                           headers=["subject", "context", "dtype",
                                    "bytes (" + mem[0]["mem_kind"] + ")", "beyond baseline"],
                           tablefmt="github"), ""]
    return "\n".join(lines)


def _floors(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- plot ----------------------------------------------------------------------------------

def plot(doc: dict, path: Path) -> Path | None:
    """Overhead (ratio to the floor) against size, one line per implementation; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cfg = doc["config"]
    alone = [r for r in doc["results"] if r["context"] == "alone" and r.get("ratio_floor")
             and r["subject"] != "floor"]
    if not alone:
        return None
    modes = [m for m in cfg["modes"] if any(r["mode"] == m for r in alone)]
    phases = [p for p in cfg["phases"] if any(r["phase"] == p for r in alone)]
    fig, axes = plt.subplots(len(modes), len(phases), figsize=(4.2 * len(phases), 3.4 * len(modes)),
                             squeeze=False, sharex=True)
    styles = ["-", "--", ":", "-."]
    subjects: list[str] = []
    for r in alone:
        if r["subject"] not in subjects:
            subjects.append(r["subject"])
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, mode in enumerate(modes):
        for j, phase in enumerate(phases):
            ax = axes[i][j]
            for s, name in enumerate(subjects):
                for d, dtype in enumerate(cfg["dtypes"]):
                    pts = sorted((r["exp"], r["ratio_floor"]) for r in alone
                                 if (r["subject"], r["mode"], r["phase"], r["dtype"])
                                 == (name, mode, phase, dtype))
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts],
                                styles[d % len(styles)], marker="o", markersize=3,
                                color=colours[s % len(colours)],
                                label=f"{name} {dtype}" if (i, j) == (0, 0) else None)
            ax.axhline(1.0, color="grey", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_title(f"{mode}, {PHASE_TEXT[phase]}", fontsize=9)
            ax.set_xlabel("log2(elements)")
            ax.set_ylabel("time ÷ floor")
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"GRL overhead vs the one-kernel floor: torch {doc['torch']}, {doc['device']}",
                 fontsize=10)
    fig.legend(loc="lower center", ncol=min(4, max(1, len(subjects) * len(cfg["dtypes"]))),
               fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- files ---------------------------------------------------------------------------------

def write(doc: dict, directory: Path | str, plot_png: bool = True) -> list[Path]:
    """`latency-<torch>-<device>.md/.json/.png` and `latency-latest.json`; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"latency-{slug_of(doc)}"
    md, js, latest = directory / f"{stem}.md", directory / f"{stem}.json", directory / LATEST
    payload = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    md.write_text(render_markdown(doc), encoding="utf-8")
    js.write_text(payload, encoding="utf-8")
    latest.write_text(payload, encoding="utf-8")
    written = [md, js, latest]
    if plot_png:
        png = plot(doc, directory / f"{stem}.png")
        if png is None:
            print("no PNG: matplotlib is not installed (pip install -e '.[plot]')")
        else:
            written.append(png)
    return written


def load(path: Path | str) -> dict:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("kind") != "grl-latency-sweep" or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a latency sweep of schema {SCHEMA}")
    return doc


def find(directories: Iterable[Path | str], torch_version: str, device_slug: str) -> dict | None:
    """The sweep for this torch and device: `latency-<torch>-<device>.json`, else a matching
    `latency-latest.json`; None where there is none (a sweep from elsewhere would mislead)."""
    slug = f"{torch_version.split('+')[0]}-{device_slug}"
    for directory in directories:
        directory = Path(directory)
        for path in (directory / f"latency-{slug}.json", directory / LATEST):
            try:
                doc = load(path)
            except (OSError, ValueError):
                continue
            if slug_of(doc) == slug:
                return doc
    return None


def annotate(impls: list[dict], doc: dict | None, source: str = "") -> list[dict]:
    """Give each matrix row dict a `latency` entry from a sweep document (in place)."""
    if doc is None:
        return impls
    summary = summarise(doc)  # from the results: a stored summary may predate its fields
    for impl in impls:
        row = summary["rows"].get(impl["name"])
        if not row:
            continue
        ratio = (row.get("eager") or {}).get("ratio_floor")
        impl["latency"] = {"ratio_floor": ratio,  # unrounded: the renderers round once
                           "at": summary["label"], "device": doc["device_slug"],
                           "created": doc["created"], "source": source,
                           "fwdbwd_s": row.get("fwdbwd_s") or {},
                           "sizes": [f"2^{e}" for e in quoted_exps(doc)]}
    return impls



# --- the README's latency figures ------------------------------------------------------------

README_START, README_END = "<!-- latency:start -->", "<!-- latency:end -->"


def readme_block(doc: dict, link: str) -> str:
    """The README's latency table: every row's forward+backward at the headline size, eager and
    compiled, over the floor, the kernels inductor adds and the bytes kept, from one sweep."""
    summary = summarise(doc)
    exp = summary["at"]["exp"]
    rows = [(name, row) for name, row in summary["rows"].items() if row.get("status") != "error"
            and (row.get("eager") or {}).get("ratio_floor") is not None]
    rows.sort(key=lambda nr: (nr[1]["eager"]["ratio_floor"], nr[0]))
    lines = [f"From [{link}]({link}) (torch {doc['torch']}, {doc['device']}, {doc['created'][:10]}, "
             f"{doc['duration_s'] / 60:.1f} min): forward+backward of 2^{exp} "
             f"{summary['at']['dtype']} elements, median time over the one-kernel floor (a view "
             "forward, one `grad * -alpha` backward), the kernels inductor adds to `sin -> GRL -> "
             "cos`, and the memory a forward+backward holds beyond the floor's (saved for "
             "backward and fresh outputs).", "",
             "| impl | eager ÷ floor | compiled ÷ floor | kernels added (inductor) | memory beyond the floor |",
             "|---|---|---|---|---|"]
    for name, row in rows:
        kernels = (row.get("kernels") or {}).get("extra")
        lines.append(f"| `{name}` | {fmt_ratio(row['eager']['ratio_floor'])} | "
                     f"{fmt_ratio((row.get('compiled') or {}).get('ratio_floor'))} | "
                     f"{'-' if kernels is None else f'+{kernels}'} | "
                     f"{fmt_bytes(row['eager'].get('extra_bytes'))} |")
    failed = sorted(name for name, row in summary["rows"].items() if row.get("status") == "error")
    if failed:
        lines += ["", f"Not timed (raised): {', '.join(f'`{n}`' for n in failed)}."]
    return "\n".join(lines)
