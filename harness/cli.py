"""`grl-harness`: command-line tools around the reports.

One function per subcommand (`add_<name>(subparsers)` registers it and sets `func`); adding a
subcommand is adding one function and one entry in COMMANDS.
"""
from __future__ import annotations

import argparse
import sys


# --- diff: compare two JSON reports (or expectations files) ------------------------------

def add_diff(subparsers) -> None:
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
    p.set_defaults(func=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    from harness import gate, report

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
    return 1 if args.fail_on_regression and comparison.regressions else 0


COMMANDS = [add_diff]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grl-harness", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
