"""Repo root: pytest puts this directory on sys.path, so the self-tests import `tests.*`.

The harness's plugin comes from the installed package's `pytest11` entry point and changes
nothing in a session until conformance cells run (each row's child loads the hypothesis profile
itself). The self-tests run checks in this process, so they load it here.
"""


def pytest_configure(config):
    from harness import hypothesis_profiles

    hypothesis_profiles.load()
