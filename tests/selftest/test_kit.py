"""The check kit (`harness/checks/kit/`): one tolerance table the docs list as it is, the forms
and models written once, and the kit kept out of the areas. (No tolerance number or judge
outside the table and the judge: tests/selftest/test_tolerances.py.)"""
from __future__ import annotations

import ast
from pathlib import Path

from grl_conformance import checks as catalogue
from grl_conformance.core.tolerances import TOLERANCES, Tolerance

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ROOT / "harness" / "checks"
KIT = CHECKS / "kit"


# --- the tolerance table, as docs/checks.md lists it -------------------------------------------

def _rtol(t: Tolerance) -> str:
    if t.eps is not None:
        return f"{t.eps:g} eps of the dtype"
    if t.by_dtype:
        return f"{t.rtol:g} ({', '.join(f'{d} {r:g}' for d, r in t.by_dtype.items())})"
    return f"{t.rtol:g}"


def tolerance_table() -> str:
    """The "Tolerances" table of docs/checks.md, rendered from `core.tolerances.TOLERANCES`."""
    rows = ["| name | rtol | atol | what it absorbs |", "| --- | --- | --- | --- |"]
    rows += [f"| `{t.name}` | {_rtol(t)} | {t.atol:g} | {t.why.replace('|', chr(92) + '|')} |"
             for t in TOLERANCES.values()]
    return "\n".join(rows)


def test_the_docs_list_the_table():
    """docs/checks.md shows the table as it is (on a change, paste what the message shows)."""
    table = tolerance_table()
    assert table in (ROOT / "docs" / "checks.md").read_text(), (
        "docs/checks.md's Tolerances table differs from core/tolerances.py; it should read:\n" + table)


# --- the kit is not an area --------------------------------------------------------------------

def test_the_kit_is_no_area_and_has_no_checks():
    assert "kit" not in catalogue.AREAS
    assert all(c.area in catalogue.AREAS for c in catalogue.all_checks())
    assert not [c.id for c in catalogue.all_checks() if ".kit." in c.fn.__module__]


def test_the_kit_package_re_exports_nothing():
    """`kit/__init__.py` names its modules in its docstring; a name comes from its module."""
    tree = ast.parse((KIT / "__init__.py").read_text())
    assert all(isinstance(n, ast.Expr) for n in tree.body), "kit/__init__.py holds only a docstring"
    named = {p.stem for p in KIT.glob("*.py") if p.stem != "__init__"}
    doc = ast.get_docstring(tree) or ""
    assert all(f"`{m}`" in doc for m in named), f"kit/__init__.py does not name all of {sorted(named)}"


def test_an_area_package_is_one_area_in_its_modules_order():
    """The eager area is a package of modules; its columns come module by module in `MODULES`
    order, in definition order within each (no list of ids to keep by hand)."""
    from grl_conformance.checks import eager

    eager_checks = catalogue.checks_in("eager")
    modules = [c.fn.__module__.rsplit(".", 1)[-1] for c in eager_checks]
    assert sorted(set(modules), key=modules.index) == list(eager.MODULES)
    assert modules == sorted(modules, key=eager.MODULES.index)


# --- how a GRL is called and the DANN: written once, in the kit ----------------------------------

def test_the_function_form_is_called_only_by_the_kit():
    """`impl.api.fn(x, alpha)` appears once, in `kit.forms.forms`: a check wanting the functional
    form takes it from the kit, so every column calls the GRL the same ways."""
    found = sorted(f"{p.relative_to(ROOT)}:{n.lineno}"
                   for p in CHECKS.rglob("*.py") if p != KIT / "forms.py"
                   for n in ast.walk(ast.parse(p.read_text()))
                   if isinstance(n, ast.Attribute) and n.attr == "fn"
                   and isinstance(n.value, ast.Attribute) and n.value.attr == "api")
    assert found == [], f"the function form called outside checks/kit/forms.py: {found}"


def test_no_check_module_defines_a_model_or_a_reference_grl_of_its_own():
    """The checks' models are `linear_grl_linear` and `Dann`, the truth `core.reference`: a second
    DANN or reference GRL drifts from the first (two did once)."""
    names = ("Dann", "Net", "ReferenceGRL", "Reverse", "dann_loss", "loss_fn")
    found = sorted(f"{p.relative_to(ROOT)}: {n.name}"
                   for p in CHECKS.rglob("*.py")
                   if p not in (KIT / "models.py", CHECKS / "dann.py")  # dann.py: the two-moons run
                   for n in ast.walk(ast.parse(p.read_text()))
                   if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and any(k in n.name for k in names))
    assert found == [], found


def test_forms_are_the_seed_apis_three_calls():
    import torch

    from grl_conformance.checks.kit.forms import FORMS, forms
    from tests.selftest.grls import FloatAlphaLayer, impl_of

    impl = impl_of("kit", FloatAlphaLayer)
    made = forms(impl, 0.25, FORMS)
    assert [label for label, _ in made] == list(FORMS)
    x = torch.ones(3, requires_grad=True)
    for label, grl in made:
        (g,) = torch.autograd.grad(grl(x).sum(), x)
        assert torch.equal(g, torch.full((3,), -0.25, dtype=g.dtype)), label
        grl.set_alpha(0.5)
        (g,) = torch.autograd.grad(grl(x).sum(), x)
        assert torch.equal(g, torch.full((3,), -0.5, dtype=g.dtype)), label


# --- the judge: the plain question, and the records it ends a cell with -------------------------

def test_is_reversal_answers_the_plain_question():
    import torch

    from grl_conformance.checks.kit.judge import is_reversal

    g = torch.linspace(-1, 1, 7, dtype=torch.float64)
    assert is_reversal(-0.5 * g, g, 0.5)  # exact
    assert not is_reversal(g, g, 0.5) and not is_reversal(None, g, 0.5)
    rounded = (-torch.tensor(0.3, dtype=torch.float32).double()) * g
    assert not is_reversal(rounded, g, 0.3) and is_reversal(rounded, g, 0.3, "structure")


def test_the_outcome_round_trips_through_a_dict():
    import json

    import pytest

    from grl_conformance.core.outcome import Failed, Outcome, passed

    for outcome in (passed("fine", "alpha synced"), Outcome("fail", "wrong", 1.5, "ranks disagree", ("w",))):
        assert Outcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome
    with pytest.raises(Failed) as failed:
        Outcome("fail", "wrong", summary="ranks disagree").ended()
    assert failed.value.summary == "ranks disagree"
