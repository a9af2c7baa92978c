"""A planted harness gap, for the controls' self-test: a pytest plugin (`-p`) that makes the
sandbox's forkserver import this module too, which removes dynamo's recompile-limit switches
(both names) as a future torch might. Every compile column then cannot be judged: its control
fails, and no row may be charged for it. Never used outside tests/selftest/test_controls.py.
"""
from __future__ import annotations

SWITCHES = ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit")


def pytest_configure(config) -> None:
    from grl_conformance.core import procs

    if __name__ not in procs.PRELOAD:
        procs.PRELOAD.append(__name__)  # imported by the server after torch: children inherit it


def _remove_switches() -> None:
    import sys

    config = sys.modules.get("torch._dynamo.config")
    if config is None:
        return
    for name in SWITCHES:
        config._config.pop(name, None)


_remove_switches()
