"""Hypothesis profiles: derandomized in CI (CI=true), a deeper `dev` profile for exploring.

Select explicitly with HYPOTHESIS_PROFILE=ci|default|dev. Registering is all an import does;
`load()` activates the profile.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=False)
settings.register_profile("ci", max_examples=60, derandomize=True, database=None, **_COMMON)
settings.register_profile("default", max_examples=60, **_COMMON)
settings.register_profile("dev", max_examples=600, **_COMMON)


def active_profile() -> str:
    return os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "default")


def load() -> str:
    """Load the profile for this run (the plugin and each row's child call this)."""
    name = active_profile()
    settings.load_profile(name)
    return name
