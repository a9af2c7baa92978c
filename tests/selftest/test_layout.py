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
                            catalogue._returns_a_pass("contract.probe", lambda impl: result), "")
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
