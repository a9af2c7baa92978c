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
