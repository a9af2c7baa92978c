"""Deliberately broken GRLs ("mutants") and what each must trip.

Each check module keeps its mutants in `tests/selftest/mutants_<module>.py` (mutants_reversal.py for
harness/checks/eager/reversal.py, mutants_compile.py for compile.py, ...) as a list `MUTANTS`.
`test_mutants.py` runs every (mutant, check) pair listed in `trips` and asserts the status;
it also asserts that every check in the catalogue is tripped by at least one mutant.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from grl_conformance.core.registry import GRL, Impl


@dataclass(frozen=True)
class Mutant:
    impl: Impl
    trips: Mapping[str, str]  # check id -> the status it must produce ("fail" or "error")
    why: str = ""
    passes: tuple[str, ...] = field(default=())  # checks it must still pass (guards false alarms)
    # What the trips need to show (e.g. ("cuda",)). Where it is missing, test_mutants.py
    # asserts the tripped cells are `skip` with a reason instead; the meta-test still counts
    # the trip, since the check is proven where the hardware is.
    requires: tuple[str, ...] = field(default=())


def mutant(name: str, layer: type, fn: Callable | None = None, *, trips: Mapping[str, str],
           why: str, kind: str = "function", passes: tuple[str, ...] = (),
           requires: tuple[str, ...] = ()) -> Mutant:
    """A mutant from a layer class with the seed API (fn derived from it if not given)."""

    def gradient_reversal(x, alpha=1.0):
        return layer(alpha=alpha)(x)

    api = GRL(layer, fn or gradient_reversal)
    return Mutant(Impl(name=name, kind=kind, load=lambda: api, origin="tests/selftest (mutant)",
                       ref=f"tests.selftest.mutation:{name}"), dict(trips), why, tuple(passes),
                  tuple(requires))


def all_mutants() -> list[Mutant]:
    import tests.selftest as pkg

    found: list[Mutant] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("mutants_"):
            found += importlib.import_module(f"tests.selftest.{info.name}").MUTANTS
    return found


def _mutant_modules():
    import tests.selftest as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("mutants_"):
            yield importlib.import_module(f"tests.selftest.{info.name}")


def by_name(name: str) -> Impl:
    """A mutant's Impl from its name, across MUTANTS (and EXTRA_MUTANTS) of every mutants_ file."""
    for module in _mutant_modules():
        for m in (*module.MUTANTS, *getattr(module, "EXTRA_MUTANTS", ())):
            if m.impl.name == name:
                return m.impl
    raise AttributeError(f"no mutant named {name!r} in tests/selftest/mutants_*.py")


def __getattr__(name: str) -> Impl:
    """`tests.selftest.mutation:NAME` resolves (grl_conformance.core.registry.resolve in a child process)."""
    if name.startswith("__"):
        raise AttributeError(name)
    return by_name(name)
