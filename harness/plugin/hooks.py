"""The plugin's own hook specifications (as pytest-xdist's `newhooks.py`): what other plugins
of the harness, or a user's conftest, may implement."""
from __future__ import annotations


def pytest_grl_cell_finished(config, cell: dict) -> None:
    """Called in the process that ran it with each finished matrix cell (the report's dict:
    impl, check, status, summary, detail). The torch-upgrade gate implements it; raising
    `pytest.fail` there fails that cell's test."""
