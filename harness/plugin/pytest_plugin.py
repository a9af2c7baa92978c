"""pytest plugin: one test per (implementation, check), the matrix at the end of the run.

Installed with the package (entry point `pytest11: grl_conformance`); it stays inert until
conformance modules are collected (`pytest --pyargs grl_conformance.conformance`, or this repo's
own `pytest`). Importing it loads nothing: this module's one job is registering the harness's
hook specs and its parts, each a plugin of one job, as pytest-xdist's plugin.py does:

options.py (the `--grl-*` options), lifecycle.py (configure / unconfigure), state.py (the
per-process state), scheduling.py (xdist keeps a row on one worker), cell.py (the worker side:
one test per cell), verdict.py (the one judgement of a cell), pins.py (the reference rows'
pins), gate.py (the torch-upgrade gate), and on the controller session.py, matrix.py and
display.py (the matrix, its report, what it prints).

Each cell runs in its row's sandboxed child process (isolation/sandbox.py), never in the pytest
process; every column runs first on its control (core/controls.py, isolation/control_runs.py).
A red cell is a finding, not a failing test: crashes and timeouts included. pytest's exit code
reflects the harness itself (self-tests, the reference pins) and, when a baseline is given,
regressions against it.
"""
from __future__ import annotations


def pytest_addhooks(pluginmanager) -> None:
    """The hook specs first, so the parts that implement them register against them."""
    from grl_conformance.plugin import (
        cell,
        hookspec,
        lifecycle,
        options,
        pins,
        scheduling,
        verdict,
    )

    pluginmanager.add_hookspecs(hookspec)
    for part in (options, lifecycle, scheduling, cell, verdict, pins):
        if not pluginmanager.is_registered(part):
            pluginmanager.register(part, part.__name__)
