"""Rows a user would add from outside the repo with --grl-impl (see test_registry.py)."""
from torch import nn

from grl_conformance.core.registry import Impl, seed_api

# A registry entry written by a user: it saves its input, so memory.saved is a red cell,
# which is a finding about the user's layer, never a failing pytest run.
USER_ENTRY = Impl(name="user_entry", kind="function", load=seed_api("grl_conformance.impls.naive_function"))

INSTANCE = nn.Identity()
NOT_A_GRL = 42

# An entry whose `unsupported` names a check id that does not exist: refused at collection.
TYPO_UNSUPPORTED = Impl(name="typo_unsupported", kind="function", load=seed_api("grl_conformance.impls.naive_function"),
                        unsupported={"jit.scrpt": "a typo"})
