"""The registry: --grl-impl shapes, one-line errors, and user rows never pinned as reference."""
import subprocess
import sys
from pathlib import Path

import pytest

from grl_conformance.core import registry

ROOT = Path(__file__).resolve().parents[2]
FIX = "tests.selftest.external_fixtures"


def test_reference_rows_are_exactly_the_repos_six():
    assert sorted(i.name for i in registry.builtin_impls() if i.reference) == \
        ["cpp_op", "detach", "hook", "library_op", "naive_function", "witness"]


@pytest.mark.parametrize(("ref", "message"), [
    ("no_such_module_xyz:Layer", "module 'no_such_module_xyz' failed to import"),
    (f"{FIX}:Missing", "has no attribute 'Missing'"),
    (f"{FIX}:INSTANCE", "is an nn.Module instance; pass its class"),
    (f"{FIX}:NOT_A_GRL", "expected a registry Impl, an nn.Module class with set_alpha"),
    ("no_colon", "expected MODULE:ATTR"),
])
def test_bad_grl_impl_is_one_clear_line(ref, message):
    with pytest.raises(registry.LoadError) as info:
        registry.from_attr(ref)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_users_red_cell_does_not_fail_pytest():
    """Only the repo's reference rows are pinned; a user's Impl entry is reported, not asserted."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "harness/conformance/test_eager.py",
           "-k", "memory.saved", "--grl-impl", f"{FIX}:USER_ENTRY", "--grl-only", "user_entry",
           "--grl-no-report"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "user_entry" in out.stdout and "FAIL (saves 64 KiB)" in out.stdout
