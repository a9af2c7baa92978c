"""The controller's xdist scheduling: a row's cells on one worker, so each row has one child
for the session (one load, one first compile) instead of one per worker.

By row, read from the cell's test id, not through `xdist_group` marks: xdist 3.8 tags a grouped
test by rewriting a private attribute that pytest 9.2 no longer reads, so under `--dist
loadgroup` every cell was scheduled alone and both workers started every row. Only xdist's
default `load` is changed, and only in a run whose arguments can reach the conformance modules;
even then the choice waits for the workers' collection: the controller collects nothing itself,
so what they collected is the one sure sign that this run is the matrix's (a run without cells
keeps xdist's own `load`).
"""
from __future__ import annotations

import pytest

from grl_conformance.plugin.cell import cell_key_from_nodeid


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if getattr(config.option, "dist", "") != "load" or not may_hold_the_matrix(config):
        return None  # someone else's run: xdist's own scheduler, as if this package were absent
    return ChosenOnCollection(config, log)


def may_hold_the_matrix(config: pytest.Config) -> bool:
    """Whether this run's arguments can reach the conformance modules: a path that is the
    installed `grl_conformance.conformance` folder, inside it or above it (a checkout's root),
    or that package by name under `--pyargs`. Decided on paths, not on the word in them."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("grl_conformance.conformance")  # where it is, not imported
    home = Path(spec.submodule_search_locations[0]).resolve()
    for arg in config.args:
        target = str(arg).split("::", 1)[0]
        if config.option.pyargs and target.split(".")[:2] == ["grl_conformance", "conformance"]:
            return True
        path = Path(config.invocation_params.dir, target).resolve()
        if path == home or home in path.parents or path in home.parents:
            return True
    return False


def own_process_checks() -> set[str]:
    """The checks that launch processes of their own (`Check.own_processes`: the distributed
    ones) and never use the row's child: each of their cells is scheduled alone, so it fills a
    worker that ran out of rows instead of waiting behind its row. Read from the catalogue,
    which imports torch: only once the collection holds cells."""
    from grl_conformance import checks as catalogue

    return {c.id for c in catalogue.all_checks() if c.own_processes}


def by_row(config: pytest.Config, log):
    """xdist's `loadscope`, with a row (or an own-process cell alone) as the scope."""
    from xdist.scheduler import LoadScopeScheduling

    own = own_process_checks()

    class ByRow(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            key = cell_key_from_nodeid(nodeid)
            if key is None or key[1] in own:
                return nodeid  # its own scope: any worker, whenever one is free
            return f"row {key[0]}"

    return ByRow(config, log)


class ChosenOnCollection:
    """xdist's scheduler interface, deciding which scheduler to be when the first worker's
    collection arrives (every worker collects the same ids): `by_row` when it holds cells,
    xdist's own `load` otherwise. Until then it only keeps the workers that said they are ready."""

    def __init__(self, config: pytest.Config, log) -> None:
        self.config, self.log = config, log
        self.chosen = None
        self._ready: list = []

    def _choose(self, collection) -> None:
        from xdist.scheduler import LoadScheduling

        cells = any(cell_key_from_nodeid(nodeid) for nodeid in collection)
        self.chosen = by_row(self.config, self.log) if cells else LoadScheduling(self.config, self.log)
        for node in self._ready:
            self.chosen.add_node(node)

    @property
    def nodes(self) -> list:
        return self.chosen.nodes if self.chosen is not None else list(self._ready)

    @property
    def collection_is_completed(self) -> bool:
        return self.chosen is not None and self.chosen.collection_is_completed

    @property
    def tests_finished(self) -> bool:
        return self.chosen is not None and self.chosen.tests_finished

    @property
    def has_pending(self) -> bool:
        return self.chosen is not None and self.chosen.has_pending

    def add_node(self, node) -> None:
        if self.chosen is not None:
            self.chosen.add_node(node)
        else:
            self._ready.append(node)

    def add_node_collection(self, node, collection) -> None:
        if self.chosen is None:
            self._choose(collection)
        self.chosen.add_node_collection(node, collection)

    def remove_node(self, node):
        if self.chosen is not None:
            return self.chosen.remove_node(node)
        self._ready.remove(node)
        return None

    def __getattr__(self, name: str):
        """The rest (schedule, mark_test_complete, ...) comes after the choice."""
        if name == "chosen" or self.__dict__.get("chosen") is None:
            raise AttributeError(name)
        return getattr(self.chosen, name)
