"""Repo root: pytest puts this directory on sys.path, so the self-tests import `tests.*`.

The harness's plugin comes from the installed package's `pytest11` entry point and changes
nothing in a session until conformance cells run (each row's child loads the hypothesis profile
itself). The self-tests run checks in this process, so they load it here.
"""


import os

# The self-tests run checks in this process: pin what the sandbox pins in its own processes
# (grl_conformance/isolation/preload.py), before anything imports torch.
os.environ.setdefault("TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING", "0")


def pytest_configure(config):
    from grl_conformance.core import hypothesis_profiles

    hypothesis_profiles.load()
