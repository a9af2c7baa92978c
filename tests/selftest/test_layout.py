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
        for p in (ROOT / "harness").rglob("*/__init__.py")}
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

    from grl_conformance.isolation.server import PRELOAD

    code = ("import importlib, sys\n"
            f"for name in {PRELOAD!r}:\n"
            "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_reference_pins_are_found():
    """The plugin's default expectations folder must hold files: a wrong path (as once after a
    move) leaves every reference row unpinned without a word."""
    from grl_conformance.plugin.pins import PINS_DIR

    assert PINS_DIR.is_dir() and sorted(PINS_DIR.glob("torch-*.json")), PINS_DIR


# --- layering: the stages import downwards only -------------------------------------------------

# What each stage of harness/ may import from the package (itself always): the flow registry ->
# checks -> where a cell runs -> pytest glue -> documents, with core at the bottom.
MAY_IMPORT = {
    "core": {"impls"},  # the registry finds the rows
    "checks": {"core"},
    "dann_probe": {"core", "results"},
    "isolation": {"core", "checks"},
    "results": {"core"},
    "bench": {"core", "checks", "results"},
    "plugin": {"core", "checks", "isolation", "results"},
}


def _package_imports() -> dict[str, set[str]]:
    """Module -> the grl_conformance modules it imports, function-local imports included."""
    modules = {}
    for path in (ROOT / "harness").rglob("*.py"):
        parts = ["grl_conformance", *path.relative_to(ROOT / "harness").with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    known = set(modules) | {"grl_conformance.impls"}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = {f"{node.module}.{a.name}" for a in node.names} & known
                found |= subs or {node.module}
        edges[name] = {m for m in found if m in known and m != name}
    return edges


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "top"


def test_each_stage_imports_only_the_stages_below_it():
    """core imports nothing above it, a check never reaches into the sandbox, and so on."""
    wrong = sorted(f"{a} imports {b}" for a, bs in _package_imports().items() for b in bs
                   if _stage(a) in MAY_IMPORT and _stage(b) != _stage(a)
                   and _stage(b) not in MAY_IMPORT[_stage(a)])
    assert not wrong, wrong


def test_no_import_circle():
    """Not even through a function-local import: a circle hidden that way still binds two
    modules into one."""
    edges = _package_imports()
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(edges.get(module, ())):
            if state.get(other) == 1:
                circles.append(" -> ".join(path[path.index(other):] + [module, other]))
            elif other not in state:
                visit(other, path + [module])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not circles, circles


def test_the_cells_scheduled_alone_are_the_own_processes_checks():
    """The xdist scheduler keeps a row's cells on one worker, except the cells of checks with
    `own_processes`, which never use the row's child: it finds them in the catalogue, by the
    check id in the test id, whatever module holds them."""
    from grl_conformance.plugin import scheduling

    assert scheduling.own_process_checks() == {c.id for c in catalogue.all_checks() if c.own_processes}
    assert scheduling.own_process_checks() >= {"ddp.eager", "fsdp"}


class _Node:
    def __init__(self, name: str) -> None:
        self.gateway = type("Gateway", (), {"id": name})()


class _Config:
    """The little of a controller's config that xdist's schedulers read."""

    def getvalue(self, name: str):
        return {"tx": ["2*popen"]}[name]

    def getoption(self, name: str):
        return {"maxschedchunk": None}[name]


def test_the_scheduler_is_chosen_by_what_the_workers_collected():
    """The plugin stays inert until the workers collect matrix cells, whatever the run's
    arguments are called: then a row's cells share a worker and an own-process cell is alone."""
    pytest.importorskip("xdist")
    from xdist.scheduler import LoadScheduling

    from grl_conformance.plugin import scheduling

    plain = scheduling.ChosenOnCollection(_Config(), log=None)
    node = _Node("gw0")
    plain.add_node(node)
    assert plain.nodes == [node] and not plain.collection_is_completed and not plain.tests_finished
    plain.add_node_collection(node, ["tests/selftest/test_layout.py::test_no_import_circle"])
    assert isinstance(plain.chosen, LoadScheduling) and plain.nodes == [node]

    cells = scheduling.ChosenOnCollection(_Config(), log=None)
    cells.add_node(node)
    ids = ["harness/conformance/test_eager.py::test_cell[witness-forward.identity]",
           "harness/conformance/test_distributed.py::test_cell[witness-ddp.eager]"]
    cells.add_node_collection(node, ids)
    assert cells.nodes == [node] and not cells.collection_is_completed  # one of 2 workers
    assert [cells.chosen._split_scope(i) for i in ids] == ["row witness", ids[1]]


def test_someone_elses_xdist_run_keeps_xdists_own_scheduler(tmp_path):
    """Installed in a user's environment, the plugin leaves their `pytest -n 2` alone: only a
    run whose arguments can reach the conformance modules gets the harness's scheduler."""
    from types import SimpleNamespace

    from grl_conformance.plugin import scheduling

    def config(*args, pyargs=False, where=tmp_path):
        return SimpleNamespace(args=list(args), option=SimpleNamespace(dist="load", pyargs=pyargs),
                               invocation_params=SimpleNamespace(dir=where))

    assert scheduling.pytest_xdist_make_scheduler(config(str(tmp_path / "tests")), None) is None
    assert scheduling.pytest_xdist_make_scheduler(config("tests/test_conformance_of_mine.py"), None) is None
    assert not scheduling.may_hold_the_matrix(config("grl_conformance.conformance", pyargs=False))
    assert scheduling.may_hold_the_matrix(config("grl_conformance.conformance", pyargs=True))
    assert scheduling.may_hold_the_matrix(config("harness/conformance/test_eager.py::test_cell", where=ROOT))
    assert scheduling.may_hold_the_matrix(config(".", where=ROOT))  # a checkout's root
