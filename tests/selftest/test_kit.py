"""The check kit: one table of tolerances, no number of its own anywhere else; the table and the
docs agree."""
from __future__ import annotations

import ast
from pathlib import Path

from grl_conformance.checks._common import TOLERANCES

ROOT = Path(__file__).resolve().parents[2]


def _numbers(node) -> bool:
    """A number written in the expression (an index into TOLERANCES does not count)."""
    if any(isinstance(n, ast.Name) and n.id == "TOLERANCES" for n in ast.walk(node)):
        return False
    return any(isinstance(n, ast.Constant) and isinstance(n.value, (int, float))
               and not isinstance(n.value, bool) for n in ast.walk(node))


def test_no_tolerance_number_outside_the_table():
    found = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg in ("rtol", "atol") and _numbers(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.value.lineno} {node.arg}=")
            if isinstance(node, ast.Assign) and _numbers(node.value) and any(
                    isinstance(t, (ast.Name, ast.Tuple)) and any(
                        isinstance(n, ast.Name) and ("RTOL" in n.id or "ATOL" in n.id)
                        for n in ast.walk(t)) for t in node.targets):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)[:60]}")
    assert found == [], "a tolerance outside checks/_common.TOLERANCES"


def test_the_docs_list_the_table():
    import re

    text = (ROOT / "docs" / "checks.md").read_text()
    rows = {m[0]: (float(m[1]), float(m[2]))
            for m in re.findall(r"^\| `(\w+)` \| ([0-9.e-]+) \| ([0-9.e-]+) \|", text, re.M)}
    assert rows == {name: (rtol, atol) for name, (rtol, atol, _) in TOLERANCES.items()}


# --- how a GRL is called and the DANN: written once, in the kit ----------------------------------

def test_the_function_form_is_called_only_by_the_kit():
    """`impl.api.fn(x, alpha)` appears once, in `forms`: a check wanting the functional
    form takes it from the kit, so every column calls the GRL the same ways."""
    found = sorted(f"{p.relative_to(ROOT)}:{n.lineno}"
                   for p in (ROOT / "harness" / "checks").rglob("*.py") if p.name != "_common.py"
                   for n in ast.walk(ast.parse(p.read_text()))
                   if isinstance(n, ast.Attribute) and n.attr == "fn"
                   and isinstance(n.value, ast.Attribute) and n.value.attr == "api")
    assert found == [], f"the function form called outside checks/_common.forms: {found}"


def test_no_check_module_defines_a_model_or_a_reference_grl_of_its_own():
    """The checks' models are `linear_grl_linear` and `Dann`, the truth `core.reference`: a second
    DANN or reference GRL drifts from the first (two did once)."""
    names = ("Dann", "Net", "ReferenceGRL", "Reverse", "dann_loss", "loss_fn")
    found = sorted(f"{p.relative_to(ROOT)}: {n.name}"
                   for p in (ROOT / "harness" / "checks").rglob("*.py")
                   if p.name not in ("_common.py", "dann.py")  # dann.py: the two-moons training run
                   for n in ast.walk(ast.parse(p.read_text()))
                   if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and any(k in n.name for k in names))
    assert found == [], found


def test_forms_are_the_seed_apis_three_calls():
    import torch

    from grl_conformance.checks._common import FORMS, forms
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
