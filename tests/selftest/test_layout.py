"""The catalogue's contract and the product/test boundary, tested where no mutant reaches."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from grl_conformance import checks as catalogue
from grl_conformance.core.outcome import passed
from grl_conformance.core.runner import run_check
from tests.selftest.grls import FloatAlphaLayer, impl_of

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_product_never_imports_its_tests():
    """harness/ and impls/ must work installed without tests/ (dann.py once imported mutants)."""
    offenders = sorted(f"{p.relative_to(ROOT)}: {m}"
                       for folder in ("harness", "impls") for p in (ROOT / folder).rglob("*.py")
                       for m in _imported_modules(p) if m == "tests" or m.startswith("tests."))
    assert not offenders, offenders


def _cell(result):
    """Run a registered-like check whose function returns `result`."""
    check = catalogue.Check("contract.probe", "eager",
                            catalogue._returns_a_pass("contract.probe", lambda impl: result), "",
                            "eager")
    return run_check(impl_of("probe", FloatAlphaLayer), check)


@pytest.mark.parametrize("result", ["looks fine", None, True], ids=["str", "None", "bool"])
def test_a_check_that_returns_anything_but_an_outcome_is_an_error(result):
    outcome = _cell(result)
    assert outcome.status == "error" and "contract.probe returned" in outcome.detail, outcome


def test_a_check_that_returns_passed_passes():
    outcome = _cell(passed("ok", summary="s"))
    assert (outcome.status, outcome.detail, outcome.summary) == ("pass", "ok", "s")


def test_a_missing_area_module_is_an_error(monkeypatch):
    """Its columns would otherwise vanish from the report without a word."""
    monkeypatch.setattr(catalogue, "AREAS", (*catalogue.AREAS, "no_such_area"))
    with pytest.raises(ModuleNotFoundError, match="no_such_area"):
        catalogue.all_checks()


def _layout_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Layout"):text.index("\n## ", text.index("## Layout") + 3)]


def test_the_wheels_packages_are_the_folders():
    """pyproject's explicit package list matches harness/'s folders: a new folder is shipped."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"grl_conformance", "grl_conformance.impls"} | {
        "grl_conformance." + p.parent.relative_to(ROOT / "harness").as_posix().replace("/", ".")
        for p in (ROOT / "harness").glob("*/__init__.py")}
    assert listed == folders


def test_the_readme_layout_names_every_module():
    section = _layout_section()
    missing = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if path.parent.name == "conformance":
            continue  # named as a folder: one test module per area
        folder = path.parent.relative_to(ROOT).as_posix() + "/"
        if path.name == "__init__.py":
            if folder not in section and rel not in section:
                missing.append(folder)
        elif rel not in section and not (f"`{path.name}`" in section and f"`{folder}" in section):
            missing.append(rel)
    for path in sorted((ROOT / "impls").glob("_*.py")):
        if path.name != "__init__.py" and path.name not in section:
            missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, f"README's layout table does not name: {missing}"


def test_every_forkserver_preload_name_imports():
    """A stale name in PRELOAD is skipped silently by multiprocessing: every row gets slower."""
    import subprocess
    import sys

    from grl_conformance.isolation.procs import PRELOAD

    code = ("import importlib, sys\n"
            f"for name in {PRELOAD!r}:\n"
            "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_reference_pins_are_found():
    """The plugin's default expectations folder must hold files: a wrong path (as once after a
    move) leaves every reference row unpinned without a word."""
    from grl_conformance.plugin.pytest_plugin import PINS_DIR

    assert PINS_DIR.is_dir() and sorted(PINS_DIR.glob("torch-*.json")), PINS_DIR
