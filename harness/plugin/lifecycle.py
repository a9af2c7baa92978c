"""The plugin's life cycle in each pytest process: the state made at configure, the parts
registered where they belong (the matrix on the controller, the gate when asked for), and
everything ended at unconfigure: the rows' children, the controls' shared directory."""
from __future__ import annotations

import pytest

from grl_conformance.isolation import server
from grl_conformance.plugin import gate, options, session
from grl_conformance.plugin.session import MatrixSession
from grl_conformance.plugin.state import STATE, State, impls_of


def _controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: a cell of the compatibility matrix")
    config.addinivalue_line("markers", "xdist_group(name): cells of one row share a worker")
    timeout = options.timeout(config)
    # Whoever starts this process's forkserver first (a row's child, or a distributed check run
    # directly, which reaches it through core alone) starts it with the isolation stage's preload:
    # a bare server would serve every later child too. A list handed over; nothing starts here.
    server.register()
    if _controller(config):  # one directory for every worker (isolation/control_runs.py)
        import tempfile

        controls_dir = tempfile.mkdtemp(prefix="grl-controls-")
    else:
        controls_dir = config.workerinput.get("grl_controls_dir")
    config.stash[STATE] = State(timeout, controls_dir)
    if options.names_rows(config):
        impls_of(config)  # the user named rows: a bad name stops the run here, in one line
    if _controller(config):
        config.pluginmanager.register(MatrixSession(config), session.NAME)
    gate.configure(config)  # the torch-upgrade gate (--grl-baseline ...)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: every worker shares the controller's controls directory."""
    node.workerinput["grl_controls_dir"] = node.config.stash[STATE].controls_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.box is not None:
        state.box.close()
        state.box = None
    if _controller(config) and state.controls_dir:
        import shutil

        shutil.rmtree(state.controls_dir, ignore_errors=True)
        state.controls_dir = None
