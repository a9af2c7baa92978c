"""The published-package rows: a missing package is a skip with the install hint, never a pass
or a crash; an installed one loads; dalib's warm-start layer shows NumPy 2's missing np.float."""
from __future__ import annotations

import sys
from dataclasses import replace
from importlib import metadata

import pytest

import grl_conformance.impls._peer as peer
from grl_conformance import checks as catalogue
from grl_conformance.core.registry import builtin_impls
from grl_conformance.core.runner import run_check

PEER_ROWS = [i for i in builtin_impls() if i.kind == "package" and i.ref.startswith("grl_conformance.impls.peer_")]
IDS = [i.name for i in PEER_ROWS]
DIST_OF = {i.name: i.origin.split(" ")[0] for i in PEER_ROWS}
TOP_OF = {"tgr_module": "gradient_reversal", "tgr_function": "gradient_reversal",
          "pytorch_revgrad": "pytorch_revgrad", "pytorch_adapt": "pytorch_adapt",
          "dalib_grl": "dalib", "dalib_warmstart": "dalib"}


def _identity():
    return catalogue.get("forward.identity")


def _hide(monkeypatch, top: str) -> None:
    """Make `import top` (and its submodules) raise ModuleNotFoundError for this test."""
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, top, None)


def test_every_peer_is_registered():
    assert sorted(IDS) == sorted(TOP_OF), "rows of impls/peer_*.py changed: update TOP_OF"
    assert {i.kind for i in PEER_ROWS} == {"package"}


@pytest.mark.parametrize("impl", PEER_ROWS, ids=IDS)
def test_not_installed_is_a_skip_with_the_hint(impl, monkeypatch):
    real = metadata.version

    def version(dist):
        if dist == DIST_OF[impl.name]:
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(peer.metadata, "version", version)
    outcome = run_check(replace(impl), _identity())  # a fresh entry: the cached api is per instance
    assert outcome.status == "skip", outcome
    assert "not installed" in outcome.detail and "make peers" in outcome.detail


@pytest.mark.parametrize("impl", PEER_ROWS, ids=IDS)
def test_module_missing_is_a_skip(impl, monkeypatch):
    monkeypatch.setattr(peer.metadata, "version", lambda dist: "0+fake")
    _hide(monkeypatch, TOP_OF[impl.name])
    outcome = run_check(replace(impl), _identity())
    assert outcome.status == "skip", outcome
    assert "make peers" in outcome.detail


def test_missing_light_dependency_is_a_skip(monkeypatch):
    def needs_scipy():
        raise ModuleNotFoundError("No module named 'scipy'", name="scipy")

    monkeypatch.setattr(peer.metadata, "version", lambda dist: "0+fake")
    load = peer.loader("pytorch-adapt", "pytorch_adapt.layers.gradient_reversal", lambda m: m,
                       importer=needs_scipy)
    with pytest.raises(peer.Skipped, match="needs scipy"):
        load()


def test_real_light_dependency_hidden_is_a_skip(monkeypatch):
    impl = next(i for i in PEER_ROWS if i.name == "pytorch_adapt")
    if not _installed(impl):
        pytest.skip("pytorch-adapt not installed (make peers)")
    _hide(monkeypatch, "pytorch_metric_learning")
    for name in [n for n in sys.modules if n.startswith("pytorch_adapt.")]:
        monkeypatch.delitem(sys.modules, name)
    outcome = run_check(replace(impl), _identity())
    assert outcome.status == "skip", outcome
    assert "pytorch_metric_learning" in outcome.detail


def test_other_import_failures_are_errors_with_the_message():
    def broken():
        raise ImportError("cannot import name 'thing' from 'somewhere'")

    load = peer.loader("pytest", "not_a_module_anywhere", lambda m: m, importer=broken)
    with pytest.raises(ImportError, match="cannot import name"):
        load()


def _installed(impl) -> bool:
    try:
        metadata.version(DIST_OF[impl.name])
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.parametrize("impl", PEER_ROWS, ids=IDS)
def test_installed_rows_load_and_run(impl):
    if not _installed(impl):
        pytest.skip(f"{DIST_OF[impl.name]} not installed (make peers)")
    assert impl.origin == f"{DIST_OF[impl.name]} {metadata.version(DIST_OF[impl.name])}"
    outcome = run_check(replace(impl), _identity())
    if impl.name == "dalib_warmstart":
        import numpy

        if int(numpy.__version__.split(".")[0]) >= 2:
            assert outcome.status == "error" and "'float'" in outcome.detail, outcome
            assert "grl.py" in outcome.detail, "the detail should point at dalib's own line"
            return
    assert outcome.status == "pass", outcome


@pytest.mark.parametrize("impl", PEER_ROWS, ids=IDS)
def test_set_alpha_maps_to_the_package_coefficient(impl):
    """The adapter's set_alpha must reach the package's own coefficient (gradient -alpha)."""
    if not _installed(impl) or impl.name == "dalib_warmstart":
        pytest.skip("not installed" if not _installed(impl) else "np.float under NumPy 2")
    import torch

    layer = replace(impl).api.layer(alpha=1.0)
    layer.set_alpha(0.25)
    x = torch.ones(3, requires_grad=True)
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.25)), x.grad
