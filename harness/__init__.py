"""grl-conformance: a conformance harness for PyTorch gradient reversal layers.

The one import package this distribution installs (the repository's `harness/` folder; its rows
in `impls/` are `grl_conformance.impls`). Importing it loads nothing and changes nothing: no
torch, no environment variable, no setting, no `sys.path` entry. The names below are resolved on
first use.

Flow is one-way, and the folders show it:
core (what a cell is) -> checks -> isolation (where a cell runs) -> plugin (pytest glue)
-> results (the documents written); bench holds the benchmarks beside them.

The public API, for a row of your own and a check of your own:

    from grl_conformance import Impl, seed_api          # a registry entry
    from grl_conformance import check, passed, Failed   # the check contract
    from grl_conformance import resolve                 # MODULE:ATTR or a built-in ref -> Impl

and for a user's own DANN model (the reversal probe, docs/probe.md):

    from grl_conformance import probe
    result = probe(spec)                                 # assert result.ok, result
"""
from __future__ import annotations

__version__ = "0.4.0"

_PUBLIC = {
    "GRL": "grl_conformance.core.registry",
    "Impl": "grl_conformance.core.registry",
    "LoadError": "grl_conformance.core.registry",
    "seed_api": "grl_conformance.core.registry",
    "resolve": "grl_conformance.core.registry",
    "builtin_impls": "grl_conformance.core.registry",
    "Outcome": "grl_conformance.core.outcome",
    "passed": "grl_conformance.core.outcome",
    "expect": "grl_conformance.core.outcome",
    "Failed": "grl_conformance.core.outcome",
    "Errored": "grl_conformance.core.outcome",
    "Skipped": "grl_conformance.core.outcome",
    "NotApplicable": "grl_conformance.core.outcome",
    "check": "grl_conformance.checks",
    "run_check": "grl_conformance.core.runner",
    "probe": "grl_conformance.dann_probe",
    "ProbeInputError": "grl_conformance.dann_probe",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'grl_conformance' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
