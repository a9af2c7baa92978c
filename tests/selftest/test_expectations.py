"""One home for expectations: the per-torch files pin the reference rows, and refuse typos."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grl_conformance.results import expectations

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "reports" / "baselines" / "torch-2.13.json"


def _planted(tmp_path: Path, edit) -> Path:
    directory = tmp_path / "expectations"
    directory.mkdir()
    doc = json.loads(FILE.read_text())
    edit(doc)
    (directory / "torch-2.13.json").write_text(json.dumps(doc))
    return directory


def _set(doc, impl, check, status):
    for cell in doc["cells"]:
        if (cell["impl"], cell["check"]) == (impl, check):
            cell["status"] = status
            return
    raise AssertionError(f"no cell {impl} / {check} in {FILE}")


def _run(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "harness/conformance/test_eager.py",
           "-k", "memory.saved or forward.identity", "--grl-only", "naive_function",
           "--grl-no-report", "--grl-expectations", str(directory), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_wrong_expectation_fails_a_plain_run_naming_the_cell(tmp_path):
    directory = _planted(tmp_path, lambda d: _set(d, "naive_function", "memory.saved", "pass"))
    done = _run(directory)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "reference row naive_function / memory.saved should be pass per torch-2.13.json, got fail" \
        in done.stdout


def test_a_known_failure_that_passes_is_reported_stale_not_failed(tmp_path):
    directory = _planted(tmp_path, lambda d: _set(d, "naive_function", "forward.identity", "fail"))
    done = _run(directory)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "STALE EXPECTATIONS (1)" in done.stdout
    assert "naive_function / forward.identity is listed as fail" in done.stdout


def test_an_unknown_check_id_in_the_file_is_refused_by_name(tmp_path):
    directory = _planted(tmp_path, lambda d: d["cells"].append(
        {"impl": "naive_function", "check": "backward.reversl", "status": "pass", "detail": ""}))
    done = _run(directory)
    assert done.returncode != 0
    assert "unknown check id(s) backward.reversl" in done.stdout + done.stderr


def test_an_unknown_unsupported_key_is_refused_by_name():
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "harness/conformance/test_eager.py",
           "--grl-impl", "tests.selftest.external_fixtures:TYPO_UNSUPPORTED", "--grl-no-report",
           "--collect-only"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "`unsupported` names unknown check id(s) jit.scrpt" in done.stdout + done.stderr


@pytest.mark.parametrize(("version", "device", "want", "exact"), [
    ("2.13.0", "cpu", "torch-2.13.json", True),
    ("2.14.1", "cpu", "torch-2.14.json", True),
    ("2.15.0", "cpu", "torch-2.14.json", False),
    ("2.13.1", "cuda-nvidia-h200", "torch-2.13.json", False),
    ("2.12.0", "cpu", None, False),
])
def test_pick_holds_a_torch_without_a_file_to_the_newest_older(tmp_path, version, device, want, exact):
    for name in ("torch-2.13.json", "torch-2.14.json"):
        shutil.copy(FILE, tmp_path / name)
    choice = expectations.pick(tmp_path, version, device)
    if want is None:
        assert choice is None
        return
    assert choice.path.name == want and choice.exact == exact
    assert ("held to" in choice.note) == (not exact)


def test_committed_files_name_only_registered_checks_and_rows():
    from grl_conformance import checks
    from grl_conformance.core import registry

    for path in sorted((ROOT / "reports" / "baselines").glob("torch-*.json")):
        expectations.validate(json.loads(path.read_text()), path,
                              [c.id for c in checks.all_checks()],
                              [i.name for i in registry.builtin_impls()])


def test_a_not_judged_cell_never_fails_a_pin():
    """A column whose control failed judged nothing: the pin is not broken, and the note says
    why (docs/gate.md); the run's header and the gate say the column was not held."""
    from pathlib import Path

    from grl_conformance.results.expectations import UNPINNED, Choice, Pins

    pins = Pins({"cells": [{"impl": "witness", "check": "export", "status": "pass"}]},
                Choice(Path("torch-2.14.json"), True, True, ""))
    verdict, message = pins.judge({"impl": "witness", "check": "export", "status": "skip",
                                   "summary": "not judged", "detail": "not judged: the control"})
    assert verdict == UNPINNED and "not judged here" in message
