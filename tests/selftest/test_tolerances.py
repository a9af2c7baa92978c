"""One tolerance table, one judge family: found statically, where no mutant reaches.

- A tolerance number (a float of magnitude <= 0.05, `2 ** -n`, or a multiple of
  `torch.finfo(...).eps`) in a comparison anywhere in the package outside
  `core/tolerances.py` is an offender: in a `<`/`<=`/`==` comparison, as `rtol=`/`atol=`, or
  as an argument of an allclose-like call, written there or through a module constant.
- A tensor comparison (`torch.allclose`, `torch.equal`, `isclose`, `assert_close`) outside the
  kit's judge is a judge of its own.
"""
from __future__ import annotations

import ast
from pathlib import Path

from grl_conformance.core.tolerances import TOLERANCES, Tolerance

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "harness"
HOME = HARNESS / "core" / "tolerances.py"
# Where a tensor comparison is the job, each with why: the judge family, the probe's proof that
# it left the user's model exactly as it was, and its pairing of a head's input with the trunk
# output it was copied from (finding where a value came from, not a verdict on a GRL).
JUDGES = {HOME: "the tolerance type's own comparison",
          HARNESS / "checks" / "kit" / "judge.py": "the checks' judge family",
          HARNESS / "dann_probe" / "state.py": "the user's model restored, bit for bit",
          HARNESS / "dann_probe" / "pairing.py": "a head's input paired with a trunk output by value"}
COMPARING_CALLS = {"allclose", "isclose", "assert_close", "equal", "close", "holds"}
SMALL = 0.05  # above it live the checks' alphas and inputs (0.1, 0.25, 0.3), not tolerances
# Small numbers in comparisons that are no tolerance, each with why.
NOT_TOLERANCES = {"harness/results/latency.py:84: 0.001": "switches a duration from µs to ms"}


def _small(node: ast.AST) -> bool:
    """A literal small float, `2.0 ** -n`, or `... finfo(...).eps`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, float):
        return 0 < abs(node.value) <= SMALL
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        try:
            value = eval(compile(ast.Expression(node), "<tol>", "eval"), {})  # noqa: S307 - literals only
        except Exception:  # noqa: BLE001 - not a literal power
            return False
        return isinstance(value, float) and 0 < abs(value) <= SMALL
    return isinstance(node, ast.Attribute) and node.attr == "eps"


def _constants(tree: ast.Module) -> set[str]:
    """Names (module constants and locals alike) bound to an expression holding a tolerance
    number."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) and node.value else [])
        value = getattr(node, "value", None)
        if value is not None and any(_small(n) for n in ast.walk(value)):
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _comparisons(tree: ast.Module):
    """Every expression that decides a comparison: Compare nodes, allclose-like calls, and
    rtol=/atol= keywords."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            yield node
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in COMPARING_CALLS:
                yield node
            for kw in node.keywords:
                if kw.arg in ("rtol", "atol"):
                    yield kw.value


def _offenders(path: Path) -> list[str]:
    """`path:line: expression` for each tolerance number in a comparison, once each, in order."""
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = _constants(tree)
    found = {(node.lineno, node.col_offset, ast.unparse(node))
             for expr in _comparisons(tree) for node in ast.walk(expr)
             if _small(node) or (isinstance(node, ast.Name) and node.id in constants)}
    # a multiple of a dtype's epsilon is a tolerance wherever it is written
    found |= {(node.lineno, node.col_offset, ast.unparse(node)) for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and node.attr == "eps"}
    return [f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{line}: {text}"
            for line, _, text in sorted(found)]


def test_no_tolerance_number_outside_the_table():
    offenders = sorted({o for p in HARNESS.rglob("*.py") if p != HOME for o in _offenders(p)}
                       - set(NOT_TOLERANCES))
    assert not offenders, ("tolerance numbers outside core/tolerances.py (name one in its "
                           "table instead):\n" + "\n".join(offenders))


def test_the_scan_finds_what_it_forbids(tmp_path):
    """The scan itself can fail: each way of writing a tolerance is found."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import torch\nLIMIT = 1e-5\nBF = 2.0 ** -8\n"
        "def f(a, b, d):\n"
        "    x = torch.allclose(a, b, rtol=1e-6)\n"
        "    y = abs(a - b) < LIMIT\n"
        "    z = a <= 4 * torch.finfo(d).eps\n"
        "    w = a < BF\n"
        "    floor = max(a, 1e-6)  # a floor, not a comparison\n"
        "    return x, y, z, w, floor\n")
    found = [o.rsplit(": ", 1)[1] for o in _offenders(planted)]
    assert found == ["1e-06", "LIMIT", "torch.finfo(d).eps", "BF"], found


def test_no_judge_outside_the_kit():
    """Comparing tensors is the judge's job: an area that compares is a judge of its own."""
    offenders = []
    for path in HARNESS.rglob("*.py"):
        if path in JUDGES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"allclose", "isclose", "assert_close", "equal"}):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not offenders, "tensor comparisons outside the judge:\n" + "\n".join(offenders)


def test_every_tolerance_says_what_it_absorbs():
    for name, t in TOLERANCES.items():
        assert isinstance(t, Tolerance) and t.name == name and t.why, name
        assert t.rtol_for() >= 0 and t.atol >= 0, name
