"""The `--grl-*` command-line options, and reading the ones that need more than `getoption`:
one place, so a run that names a bad value stops in one line before any cell runs."""
from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grl", "grl-conformance")
    group.addoption("--grl-impl", action="append", default=[], metavar="MODULE:ATTR",
                    help="add an implementation from outside the repo (repeatable; also "
                         "GRL_IMPLS=MODULE:ATTR,...). ATTR: a registry Impl, an nn.Module class "
                         "with set_alpha, or a function (x, alpha).")
    group.addoption("--grl-only", action="append", default=[], metavar="NAME[,NAME]",
                    help="run only these implementation rows")
    group.addoption("--grl-no-builtin", action="store_true",
                    help="leave out this package's own rows (impls/), except those named by "
                         "--grl-only: the matrix of your --grl-impl rows alone")
    group.addoption("--grl-expectations", default=None, metavar="DIR",
                    help="where the reference rows' expectations files live (default: the "
                         "package's own, reports/baselines in the repo)")
    group.addoption("--grl-timeout", type=float, default=None, metavar="SECONDS",
                    help="per-cell limit; on expiry the row's process is killed and the cell is "
                         "error (also GRL_TIMEOUT; default 300)")
    group.addoption("--grl-keep-logs", default=None, metavar="DIR",
                    help="save the last 256 KiB of each row process's output in DIR when the "
                         "row ends (default: kept in memory for the footnotes, no files)")
    group.addoption("--grl-report-dir", default=None, metavar="DIR",
                    help="where to write the reports (default: reports/ in the repo root)")
    group.addoption("--grl-no-report", action="store_true",
                    help="print the matrix but write no report files")
    group.addoption("--grl-baseline", default=None, metavar="FILE|auto",
                    help="torch-upgrade gate: fail every cell that is worse than in this "
                         "expectations file (a pass no longer passing, or a new fail); 'auto' "
                         "picks reports/baselines/torch-<this major.minor or the newest older>.json")
    group.addoption("--grl-update-baseline", action="store_true",
                    help="write this run's cells as reports/baselines/torch-<major.minor>.json")
    group.addoption("--grl-allow-unjudged", action="store_true",
                    help="with --grl-update-baseline: write the file even when a column's control "
                         "failed here (its cells are recorded as not judged)")
    group.addoption("--grl-baseline-dir", default=None, metavar="DIR",
                    help="where expectations files live for 'auto' and --grl-update-baseline "
                         "(default: reports/baselines in the repo root)")


def only(config: pytest.Config) -> list[str]:
    """The rows named by --grl-only (repeatable, comma-separated)."""
    return [n.strip() for arg in config.getoption("--grl-only") for n in arg.split(",") if n.strip()]


def names_rows(config: pytest.Config) -> bool:
    """Whether the user chose the rows: then a bad name stops the run at configure time."""
    return bool(config.getoption("--grl-impl") or only(config) or config.getoption("--grl-no-builtin"))


def timeout(config: pytest.Config) -> float:
    """The per-cell limit: --grl-timeout, else GRL_TIMEOUT, else the sandbox's default."""
    from grl_conformance.isolation import sandbox

    try:
        value = config.getoption("--grl-timeout")
        value = sandbox.timeout_from_env() if value is None else value
        if not value > 0:
            raise ValueError(f"--grl-timeout must be positive, got {value:g}")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    return value
