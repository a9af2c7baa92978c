"""`grl-harness`: the harness's command line, one subcommand per tool.

Each subcommand is a function below that adds its parser and returns the handler; handlers
import their (torch-heavy) modules lazily, so `grl-harness --help` stays fast. Adding a
subcommand is one more `_name(sub)` function and one line in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _sweep(sub) -> None:
    p = sub.add_parser("sweep", help="latency and memory sweep (reports/latency-*.md/json/png)",
                       description="Time forward, backward and forward+backward of every "
                                   "registry row against a one-kernel floor; see docs/sweep.md.")
    p.add_argument("--sizes", metavar="SPEC",
                   help="exponents of two: LO:HI[:STEP] or a comma list (default 10:24:2 "
                             "on CPU, 10:26:2 on CUDA; --quick: 10,14,18)")
    p.add_argument("--dtypes", metavar="LIST",
                   help="comma list of float32,bfloat16,float16,float64 "
                             "(default float32,bfloat16; --quick: float32)")
    p.add_argument("--only", action="append", default=[], metavar="NAME[,NAME]",
                   help="registry rows to sweep (default: all); baselines always run")
    p.add_argument("--impl", action="append", default=[], metavar="MODULE:ATTR",
                   help="add an implementation from outside the repo (as --grl-impl)")
    p.add_argument("--modes", metavar="LIST", help="eager,compiled (default both)")
    p.add_argument("--contexts", metavar="LIST", help="alone,model (default both)")
    p.add_argument("--phases", metavar="LIST", help="fwd,bwd,fwdbwd (default all)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda where available, else cpu")
    p.add_argument("--out", default="reports", metavar="DIR",
                   help="output directory (default reports/)")
    p.add_argument("--min-run-time", type=float, metavar="S",
                   help="seconds of timing per point (default 0.1, at least 5 blocks; "
                        "--quick 0.05)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads while timing (default: torch.get_num_threads())")
    p.add_argument("--no-kernels", action="store_true",
                   help="skip the inductor kernel count")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--quick", action="store_true",
                   help="development run: 2^10, 2^14, 2^18, float32, 0.05 s per point")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    def run(args: argparse.Namespace) -> int:
        from grl_conformance.bench import sweep

        return sweep.main(args)

    p.set_defaults(handler=run)


# --- diff: compare two JSON reports (or expectations files) ------------------------------

def _diff(subparsers) -> None:
    p = subparsers.add_parser(
        "diff", help="tabulated diff of two JSON reports (or baselines): regressions first",
        description="Compare two compatibility reports cell by cell. A regression is a cell that "
                    "passed in OLD and does not in NEW, or a fail that OLD did not have.")
    p.add_argument("old", help="the older report or expectations file (JSON)")
    p.add_argument("new", help="the newer report (JSON)")
    p.add_argument("--all", action="store_true",
                   help="also list unchanged known failures (fail/error in both)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit with status 1 when NEW has a regression")
    p.add_argument("--width", type=int, default=100, help="detail column width (default 100)")
    p.add_argument("--readme", metavar="FILE",
                   help="also rewrite the block between the gate markers in FILE (the README's "
                        "upgrade example) with this diff's counts and cells")
    p.set_defaults(handler=run_diff)


def _readme_link(path: str, readme) -> str:
    """`path` as a link from the README's folder: the blocks link the reports they came from."""
    from pathlib import Path

    folder = Path(readme).resolve().parent
    try:
        return Path(path).resolve().relative_to(folder).as_posix()
    except ValueError:
        raise ValueError(f"{path} is not under {folder}: a link from {readme} could not reach "
                         "it") from None


def _rewrite_readme(command: str, readme: str, blocks, stream=None) -> int:
    """Rewrite README blocks, each `(make_text, *markers)` (`advice.update_readme`'s markers; the
    text is made here, so a report the README cannot link to is an error too). Says whether the
    file changed; 2 with one line when it cannot be done."""
    from pathlib import Path

    from grl_conformance.results import advice

    try:
        changed = False
        for make_text, *markers in blocks:
            changed |= advice.update_readme(Path(readme), make_text(), *markers)
    except (OSError, ValueError, KeyError) as exc:
        print(f"grl-harness {command}: {exc}", file=sys.stderr)
        return 2
    print(f"{readme}: {'updated' if changed else 'unchanged'}", file=stream or sys.stdout)
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from grl_conformance.results import compare as gate
    from grl_conformance.results import report

    try:
        old, new = report.load(args.old), report.load(args.new)
    except (OSError, ValueError) as exc:
        print(f"grl-harness diff: {exc}", file=sys.stderr)
        return 2
    comparison = gate.compare(old["cells"], new["cells"])
    show = [v for v in gate.VERDICT_ORDER if v != gate.SAME and (args.all or v != gate.KNOWN)]
    for name, path, doc in (("old", args.old, old), ("new", args.new, new)):
        print(f"{name}: {path}: torch {doc.get('torch', '?')}, {doc.get('device', '?')}, "
              f"{len(doc['cells'])} cells")
    if old.get("device", "").split(" (")[0] != new.get("device", "").split(" (")[0]:
        print("note: different devices; skip cells (no CUDA) may differ for that reason alone")
    print()
    print(gate.render(comparison, *gate.labels(old, new), show=show, detail_width=args.width))
    if args.readme:
        block = (lambda: gate.readme_block(old, new, _readme_link(args.old, args.readme),
                                           _readme_link(args.new, args.readme)),
                 gate.README_START, gate.README_END)
        # stderr: stdout stays the diff alone, which `make readme` commits as a text file
        if _rewrite_readme("diff", args.readme, [block], stream=sys.stderr):
            return 2
    return 1 if args.fail_on_regression and comparison.regressions else 0


# --- run: the matrix for outside rows, from any directory -----------------------------------

def _run(sub) -> None:
    p = sub.add_parser(
        "run", help="the compatibility matrix for your GRL(s): printed, written as Markdown/JSON",
        description="Run every check on the given implementations (each in its own sandboxed "
                    "process) and write the matrix to --out. Exit status is pytest's: 0 unless "
                    "a baseline gate finds a regression (red cells alone never fail the run).")
    p.add_argument("refs", nargs="+", metavar="MODULE:ATTR",
                   help="an nn.Module class with set_alpha, a function (x, alpha), or a registry "
                        "Impl; MODULE is imported from the current directory or the environment")
    p.add_argument("--out", default="grl-reports", metavar="DIR",
                   help="where the reports go (default ./grl-reports)")
    p.add_argument("-n", "--numprocesses", default="2", metavar="N",
                   help="pytest-xdist workers (default 2; 0 runs in this process's children only)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="per-cell limit (default 300, or GRL_TIMEOUT)")
    p.add_argument("--area", action="append", default=[], metavar="AREA[,AREA]",
                   help="only these areas (default all): " + ", ".join(_areas()))
    p.add_argument("--compare", action="append", default=[], metavar="NAME[,NAME]",
                   help="add the package's own rows for comparison (names as in the report, "
                        "e.g. naive_function,library_op; 'all' for every one)")
    p.add_argument("--baseline", metavar="FILE|auto",
                   help="gate: exit 1 when a cell is worse than in this expectations file, 6 "
                        "when a column could not be judged here (NOT HELD); "
                        "'auto' picks torch-<major.minor> (or the newest older) in --baselines")
    p.add_argument("--update-baseline", action="store_true",
                   help="write this run as --baselines/torch-<major.minor>.json (refused, exit 6, "
                        "while a column's control fails here)")
    p.add_argument("--allow-unjudged", action="store_true",
                   help="with --update-baseline: write it even when a column's control failed")
    p.add_argument("--baselines", default="grl-expectations", metavar="DIR",
                   help="your committed expectations files (default ./grl-expectations)")
    p.set_defaults(handler=run_matrix, takes_extra=True)
    p.epilog = "Anything after -- goes to pytest, e.g. -- -k compile -x."


def _areas() -> list[str]:
    from grl_conformance.checks import AREAS

    return list(AREAS)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for arg in values for v in arg.split(",") if v.strip()]


def pytest_args_for_run(args: argparse.Namespace) -> list[str]:
    """The pytest command line `grl-harness run` stands for (the self-tests run the same)."""
    from pathlib import Path

    import grl_conformance.conformance as conformance

    here = Path(conformance.__file__).parent
    areas = _split(args.area)
    unknown = sorted(set(areas) - set(_areas()))
    if unknown:
        raise SystemExit(f"grl-harness run: unknown area {', '.join(unknown)}; "
                         f"one of {', '.join(_areas())}")
    targets = [str(here / f"test_{a}.py") for a in areas] or [str(here)]
    out = ["-c", str(here / "grl-pytest.ini"), "--rootdir", str(here), *targets,
           "--grl-report-dir", str(Path(args.out).resolve()),
           "--grl-baseline-dir", str(Path(args.baselines).resolve())]
    for ref in args.refs:
        out += ["--grl-impl", ref]
    compare = _split(args.compare)
    if "all" not in compare:
        out.append("--grl-no-builtin")
        if compare:
            out += ["--grl-only", ",".join(compare)]
    if str(args.numprocesses) not in ("0", ""):
        out += ["-n", str(args.numprocesses)]
    else:
        out += ["-p", "no:xdist"]
    if args.timeout is not None:
        out += ["--grl-timeout", str(args.timeout)]
    if args.baseline:
        out += ["--grl-baseline", args.baseline if args.baseline == "auto"
                else str(Path(args.baseline).resolve())]
    if args.update_baseline:
        out.append("--grl-update-baseline")
    if args.allow_unjudged:
        out.append("--grl-allow-unjudged")
    return out + list(getattr(args, "extra", []))


def run_matrix(args: argparse.Namespace) -> int:
    import os

    import pytest

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # MODULE:ATTR is found where the user's code lives, as `python -m`
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (cwd, os.environ.get("PYTHONPATH", "")) if p)  # and in the workers
    return int(pytest.main(pytest_args_for_run(args)))


# --- advise: the README's "Which GRL should I use?" table from a committed report ---------

def _advise(sub) -> None:
    p = sub.add_parser("advise", help="the 'Which GRL should I use?' table from a JSON report",
                       description="Render the decision table (one row per implementation, "
                                   "one column per DANN concern) from a compatibility report.")
    p.add_argument("report", help="a JSON report (e.g. reports/compat-2.13.0-cpu.json)")
    p.add_argument("--readme", metavar="FILE",
                   help="rewrite the block between the advice markers in FILE instead of printing")
    p.add_argument("--latency", metavar="SWEEP",
                   help="a latency sweep's JSON: with --readme, also rewrite FILE's latency block")
    p.set_defaults(handler=run_advise)


def run_advise(args: argparse.Namespace) -> int:
    from grl_conformance.results import advice, latency, report

    doc = report.load(args.report)
    if not args.readme:
        print(advice.render(doc, args.report))
        return 0
    blocks = [(lambda: advice.render(doc, _readme_link(args.report, args.readme)),)]
    if args.latency:
        blocks.append((lambda: latency.readme_block(latency.load(args.latency),
                                                    _readme_link(args.latency, args.readme)),
                       latency.README_START, latency.README_END))
    return _rewrite_readme("advise", args.readme, blocks)


# --- history: the matrix across torch releases, from `make history`'s reports ------------

def _history(sub) -> None:
    p = sub.add_parser("history", help="the torch-history page from one JSON report per torch",
                       description="Render reports/history/README.md: the releases measured, each "
                                   "change between neighbouring torch releases, and where each "
                                   "cell passes. `make history` writes the reports first.")
    p.add_argument("directory", help="a folder of compat-<torch>-cpu.json reports (reports/history)")
    p.add_argument("--out", metavar="FILE", help="write the page here instead of printing it")
    p.add_argument("--readme", metavar="FILE",
                   help="rewrite the block between the history markers in FILE (the README's "
                        "Torch versions figures: releases, wall times, columns not judged)")
    p.set_defaults(handler=run_history)


def run_history(args: argparse.Namespace) -> int:
    from pathlib import Path

    from grl_conformance.results import history

    try:
        docs, wall_times = history.load_dir(args.directory)
        text = history.render(docs, wall_times)
        block = (history.readme_block(docs, wall_times, _readme_link(args.directory, args.readme))
                 if args.readme else "")
    except (OSError, ValueError, KeyError) as exc:
        print(f"grl-harness history: {args.directory}: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"history written: {args.out}")
    elif not args.readme:
        print(text)
    if args.readme:
        return _rewrite_readme("history", args.readme,
                               [(lambda: block, history.README_START, history.README_END)])
    return 0


# --- probe: is the GRL in the user's own DANN model doing anything? ----------------------

def _probe(sub) -> None:
    p = sub.add_parser(
        "probe", help="check the GRL wiring of your own DANN model (docs/probe.md)",
        description="Measure, on your own model and batch, that the domain loss reaches the "
                    "trunk reversed and alpha-scaled, the label loss does not, alpha follows your "
                    "schedule, the domain head learns its task and the optimizer holds every "
                    "parameter. Exit 0: every check passed (or skipped with its reason); 1: a "
                    "check failed; 2: the spec cannot be probed.")
    p.add_argument("ref", metavar="MODULE:ATTR",
                   help="the spec dict, or a zero-argument function returning it; MODULE is "
                        "imported from the current directory or the environment")
    p.add_argument("--compile", action="store_true",
                   help="also probe torch.compile of your losses, naming what differs")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--out", metavar="DIR", help="write probe-<spec>.md and .json into DIR")
    p.set_defaults(handler=run_probe)


def run_probe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from grl_conformance.dann_probe import ProbeInputError, load, probe
    from grl_conformance.results import probe_report

    try:
        result = probe(load(args.ref), compile=args.compile, name=args.ref)
    except ProbeInputError as exc:
        print(f"grl-harness probe: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - never a traceback: the probe's own limit, named
        from grl_conformance.core.outcome import describe_failure

        print(f"grl-harness probe: the probe could not measure (this says nothing about your "
              f"wiring): {describe_failure(exc)}", file=sys.stderr)
        return 1
    print(result)
    doc = result.as_dict()
    written = [probe_report.write_json(doc, Path(args.json))] if args.json else []
    written += probe_report.write(doc, Path(args.out)) if args.out else []
    for path in written:
        print(f"written: {path}")
    return 0 if result.ok else 1


SUBCOMMANDS: list[Callable] = [_run, _probe, _diff, _sweep, _advise, _history]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grl-harness",
                                     description="grl-conformance: check gradient reversal "
                                                 "layers. Start with `grl-harness run "
                                                 "MODULE:ATTR`.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and not getattr(args, "takes_extra", False):
        parser.error(f"{args.command} takes no arguments after --")
    args.extra = extra
    return int(args.handler(args) or 0)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """`grl-sweep ...` = `grl-harness sweep ...`."""
    return main(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
