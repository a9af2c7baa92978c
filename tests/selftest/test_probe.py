"""The reversal probe: passes correctly wired DANNs, names each miswiring, leaves the user's
objects as it found them, and answers bad input with one line and exit 2."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from grl_conformance import cli
from grl_conformance.dann_probe import ProbeInputError, probe, verdicts
from grl_conformance.dann_probe.spec import DEFAULT_PROGRESS
from tests.selftest import probe_setups as setups

CHECK_IDS = [name for name, _ in verdicts.CHECKS]
FAILING = ("fail", "error")


def failing(result) -> set[str]:
    return {name for name, v in result.checks.items() if v.status in FAILING}


@pytest.mark.parametrize("name", sorted(setups.WIRED))
def test_a_correctly_wired_dann_passes(name):
    result = probe(setups.WIRED[name](), name=name)
    assert result.ok, result
    assert list(result.checks) == CHECK_IDS


def test_a_full_spec_is_judged_by_every_check():
    """No check skips when the spec gives everything: a pass there is a measured pass."""
    result = probe(setups.correct())
    assert {v.status for v in result.checks.values()} == {"pass"}, result
    alphas = result.checks["schedule"].figures["alpha"]
    assert alphas == pytest.approx({f"p={p:g}": setups.dann_schedule(p) for p in DEFAULT_PROGRESS},
                                   rel=1e-6)


def test_without_options_the_optional_checks_skip_saying_why():
    result = probe(setups.correct_no_options())
    skipped = {n: v.summary for n, v in result.checks.items() if v.status == "skip"}
    assert set(skipped) == {"schedule", "label_path", "optimizer"}, result
    assert "set_progress" in skipped["schedule"] and "optimizer" in skipped["optimizer"]


@pytest.mark.parametrize("setup", list(setups.MISWIRED), ids=lambda f: f.__name__)
def test_each_miswiring_fails_the_check_that_names_it(setup):
    result = probe(setup(), name=setup.__name__)
    assert not result.ok
    assert failing(result) == setups.MISWIRED[setup], result


@pytest.mark.parametrize("setup", list(setups.UNVERIFIED), ids=lambda f: f.__name__)
def test_a_setup_the_probe_cannot_measure_is_not_verified_never_a_pass(setup):
    result = probe(setup())
    assert not result.ok and not failing(result), result
    unverified = {n for n, v in result.checks.items() if v.unverified}
    assert unverified == setups.UNVERIFIED[setup] and "NOT VERIFIED" in str(result)


def test_a_reversal_inside_the_named_head_is_found_and_measured_there():
    result = probe(setups.grl_inside_domain_head())
    assert result.ok, result
    summary = result.checks["reversal"].summary
    assert "reversed by a GRL, alpha" in summary, summary
    assert "measured at domain_head.1, the module right after it" in summary
    assert result.notes == ["the reversal stands inside the domain head (domain_head): measured "
                            "at domain_head.1, the module right after it"]


def test_a_reversal_inside_a_head_with_no_module_after_it_is_explained():
    summary = probe(setups.grl_inside_bare_head()).checks["reversal"].summary
    assert "inside the domain head or after it" in summary and "module right after the GRL" in summary


def test_every_check_is_failed_by_some_miswiring():
    tripped = set().union(*setups.MISWIRED.values())
    assert tripped == set(CHECK_IDS)


def test_the_verdicts_say_what_is_wrong():
    said = {f.__name__: probe(f()).checks for f in setups.MISWIRED}
    assert "detached" in said["features_detached"]["reach"].summary
    assert "under no_grad" in said["trunk_under_no_grad"]["reach"].summary
    assert "reversal after the domain head" in said["reversal_after_domain_head"]["domain_head_learns"].summary
    assert "inside the domain head or after it" in said["reversal_after_domain_head"]["reversal"].summary
    assert "not reversed" in said["grl_not_applied"]["reversal"].summary
    assert "wrong sign" in said["negative_schedule"]["reversal"].summary
    assert "does not move" in said["alpha_not_passed"]["schedule"].summary
    assert "against its own task" in said["subtracted_domain_loss"]["domain_head_learns"].summary
    assert "reversed" in said["hook_on_shared_features"]["label_path"].summary
    assert "domain_head" in said["critic_not_in_optimizer"]["optimizer"].summary
    assert "your schedule gives" in said["schedule_formula_differs"]["schedule"].summary


def _state(spec):
    model, opt = spec["model"], spec["optimizer"]
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": {k: (p.grad.clone() if p.grad is not None else None) for k, p in model.named_parameters()},
        "modes": {k: m.training for k, m in model.named_modules()},
        "attrs": {k: {a: v for a, v in vars(m).items() if not a.startswith("_")}
                  for k, m in model.named_modules()},
        "optimizer": repr(opt.state_dict()),
        "rng": (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()),
    }


def _assert_same(before, after):
    assert before["params"].keys() == after["params"].keys()
    for k in before["params"]:
        assert torch.equal(before["params"][k], after["params"][k]), k
    for k, g in before["grads"].items():
        assert (g is None) == (after["grads"][k] is None) and (g is None or torch.equal(g, after["grads"][k])), k
    assert before["modes"] == after["modes"]
    assert before["attrs"] == after["attrs"]
    assert before["optimizer"] == after["optimizer"]
    assert torch.equal(before["rng"][0], after["rng"][0])
    assert before["rng"][1] == after["rng"][1]
    assert (before["rng"][2] == after["rng"][2]).all()


@pytest.mark.filterwarnings("ignore:Dynamo does not know")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_the_probe_leaves_the_users_objects_as_it_found_them(compile):
    """A model mid-training (momentum buffers, .grad, batch-norm statistics, alpha set, one
    module in eval mode) is bitwise the same after the probe, and losses that draw random
    numbers leave the RNGs where they were."""
    def noisy(m, b):
        torch.rand(1), random.random(), np.random.rand()
        return setups.losses(m, b)

    spec = setups.correct()
    spec["losses"] = noisy
    model, opt = spec["model"], spec["optimizer"]
    out = setups.losses(model, spec["batch"])
    (out["label"] + out["domain"]).backward()
    opt.step()
    model.grl.set_alpha(0.3)
    model.label_head.eval()
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    before = _state(spec)
    result = probe(spec, compile=compile)
    assert result.ok, result
    _assert_same(before, _state(spec))


def test_the_probe_restores_modules_parameters_and_flags_set_progress_swaps():
    spec = setups.correct()
    model = spec["model"]
    grl, weight = model.grl, model.domain_head[0].weight

    def set_progress(p):  # a loop that rebuilds its GRL, swaps a parameter and freezes a layer
        model.grl = setups.ReferenceGRL(setups.dann_schedule(p))
        model.label_head.weight.requires_grad_(False)
        model.domain_head[0].weight = torch.nn.Parameter(weight.detach().clone())

    spec["set_progress"] = set_progress
    probe(spec)
    assert model.grl is grl and model.domain_head[0].weight is weight
    assert model.label_head.weight.requires_grad


def test_the_probe_restores_what_a_warm_start_layer_advances():
    """A warm-start layer advances its counter in every forward: the probe puts it back."""
    spec = setups.warm_start_never_steps()
    spec["model"].grl.iter_num = 17
    probe(spec)
    assert spec["model"].grl.iter_num == 17


def test_compiled_probe_gives_the_same_verdicts_and_names_differences():
    result = probe(setups.grl_not_applied(), compile=True)
    assert {n for n, v in result.compiled.items() if v.status in FAILING} == {"reversal"}, result
    assert result.differences == []
    assert "compiled" in str(result)


# --- bad input: one line, exit 2 --------------------------------------------------------------

def _bad(**change):
    spec = setups.correct()
    for key, value in change.items():
        if value is KeyError:
            del spec[key]
        else:
            spec[key] = value
    return spec


def _raises(m, b):
    raise KeyError("src_imgs")


def _not_scalar(m, b):
    out = setups.losses(m, b)
    return {**out, "domain": out["domain"].repeat(3)}


BAD = {
    "missing key": (_bad(trunk=KeyError), "missing 'trunk'"),
    "unknown key": (_bad(lr=0.1), "unknown spec key 'lr'"),
    "trunk not a submodule": (_bad(trunk=torch.nn.Linear(4, 8)), "not a submodule of the model"),
    "trunk is the model": (lambda s: {**s, "trunk": s["model"]})(setups.correct()),
    "no such submodule name": (_bad(domain_head="disc"), "no submodule 'disc'"),
    "losses raises": (_bad(losses=_raises), "raised KeyError: 'src_imgs'"),
    "loss not scalar": (_bad(losses=_not_scalar), "expected a scalar"),
    "no domain loss": (_bad(losses=lambda m, b: {"label": setups.losses(m, b)["label"]}), "'domain'"),
    "progress out of range": (_bad(progress=[0.5, 2.0]), "'progress'"),
    "model not a module": (_bad(model=object()), "expected an nn.Module"),
    "alpha formula raises": (_bad(alpha=lambda p: 1 / 0), "alpha(0.1) raised ZeroDivisionError"),
    "integer loss": (_bad(losses=lambda m, b: {"domain": torch.tensor(1)}), "torch.int64"),
    "head is the trunk": (_bad(domain_head="trunk"), "the same module or one holds the other"),
    "losses calls backward": (_bad(losses=lambda m, b: _backward(setups.losses(m, b))),
                              "without calling backward()"),
}


def _backward(out):
    out["domain"].backward(retain_graph=True)
    return out
BAD["trunk is the model"] = (BAD["trunk is the model"], "the model itself")


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_spec_that_cannot_be_probed_is_one_clear_line(case):
    spec, fragment = BAD[case]
    with pytest.raises(ProbeInputError) as info:
        probe(spec)
    message = str(info.value)
    assert fragment in message and "\n" not in message


# --- the command line ------------------------------------------------------------------------

def test_cli_exit_status_and_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = "tests.selftest.probe_setups:"
    assert cli.main(["probe", ref + "correct", "--json", "out.json", "--out", "probe"]) == 0
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["ok"] is True and doc["kind"] == "grl-probe"
    assert {"torch", "python", "device", "created"} <= set(doc)
    assert [v["check"] for v in doc["runs"]["eager"]] == CHECK_IDS
    md = (tmp_path / "probe" / "probe-tests.selftest.probe_setups-correct.md").read_text()
    assert "| reversal" in md and "reversed by a GRL, alpha" in md
    assert cli.main(["probe", ref + "features_detached"]) == 1
    out = capsys.readouterr().out
    assert "NOT OK: reach" in out and "detached" in out
    assert cli.main(["probe", ref + "no_such_setup"]) == 2
    assert cli.main(["probe", "tests.selftest.test_probe:BAD"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("grl-harness probe: ") for line in err), err


# --- the committed examples on published packages ----------------------------------------------

def test_the_committed_examples_match_a_fresh_run(tmp_path):
    """reports/probe/ (written by `make probe-examples`) says what a fresh eager run says: the
    same exit status and the same failing checks for every example."""
    import importlib.util
    import re
    import subprocess
    import sys
    from pathlib import Path

    for module in ("pytorch_adapt", "dalib", "torchmetrics", "qpsolvers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (make peers)")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(root / "docs/examples/run_probes.py"), "--no-compile",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    def rows(index: Path) -> dict[str, str]:
        """spec -> the eager column (the fresh run has no compiled one to compare)."""
        found = re.findall(r"^\| `([^`]+)` \| .*? \| \d \| (.*?) \| [^|]* \|$", index.read_text(), re.M)
        return {ref: re.sub(r"\]\(.*\)$", "", said).lstrip("[") for ref, said in found}

    fresh, committed = rows(tmp_path / "README.md"), rows(root / "reports/probe/README.md")
    spec = importlib.util.spec_from_file_location("run_probes", root / "docs/examples/run_probes.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert len(committed) == len(runner.EXAMPLES) == 14 and fresh == committed


# --- the shapes real DA code has ------------------------------------------------------------

@pytest.mark.parametrize("setup", list(setups.SHAPES_WIRED.values()), ids=list(setups.SHAPES_WIRED))
def test_real_code_shapes_wired_right_pass(setup):
    result = probe(setup(), name=setup.__name__)
    assert result.ok, result


@pytest.mark.parametrize("setup", list(setups.SHAPES_MISWIRED), ids=lambda f: f.__name__)
def test_real_code_shapes_miswired_fail_the_check_that_names_it(setup):
    result = probe(setup(), name=setup.__name__)
    assert failing(result) == setups.SHAPES_MISWIRED[setup], result


def test_gan_style_verdicts_name_the_mechanism():
    said = probe(setups.correct_gan_style()).checks
    assert said["reversal"].summary.startswith("reversed in the objective, alpha 0.5: trunk "
                                               "objective = 1 x label - 0.5 x domain"), said["reversal"]
    assert "(across 2 optimizers)" in said["optimizer"].summary
    assert "'discriminator'" not in said["domain_head_learns"].summary
    wrong = probe(setups.gan_style_sign_wrong()).checks["reversal"].summary
    assert "not reversed" in wrong, wrong
    flipped = probe(setups.gan_style_discriminator_reversed()).checks["domain_head_learns"].summary
    assert "('discriminator') trains it against its own task" in flipped
    twice = probe(setups.grl_and_subtracted()).checks["reversal"].summary
    assert twice.startswith("reversed twice: a GRL (alpha"), twice


def test_a_coefficient_that_steps_on_each_call_is_reported_per_call_not_failed():
    result = probe(setups.self_counting_per_domain())
    assert result.ok, result
    summary = result.checks["reversal"].summary
    assert "alpha differs between the 2 trunk calls of one step" in summary, summary
    assert "a coefficient that steps on each call" in summary
    calls = result.checks["reversal"].figures["measured"][0]["per_call_alpha"]
    assert len(calls) == 2 and calls[0] != calls[1]


def test_several_top_level_objects_and_optimizers_are_left_as_found():
    spec = setups.correct_separate_parts_two_optimizers()
    modules = [spec["trunk"], spec["domain_head"], spec["label_head"]]
    for m in modules:
        for q in m.parameters():
            q.grad = torch.ones_like(q)
    before = [{k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()} for m in modules]
    grads = [[q.grad.clone() for q in m.parameters()] for m in modules]
    states = [repr(o.state_dict()) for o in spec["optimizer"]]
    probe(spec)
    for m, state, grad in zip(modules, before, grads, strict=True):
        assert all(torch.equal(v, state[k]) for k, v in m.state_dict(keep_vars=True).items())
        assert all(torch.equal(q.grad, g) for q, g in zip(m.parameters(), grad, strict=True))
    assert [repr(o.state_dict()) for o in spec["optimizer"]] == states


def test_an_exception_inside_the_probe_is_a_named_error_never_a_traceback(monkeypatch, capsys):
    from grl_conformance.dann_probe import measure, training

    def broken(*args, **kwargs):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(training, "step_domain_head", broken)
    result = probe(setups.correct())
    assert {v.status for v in result.checks.values()} == {"error"}
    assert "the probe could not measure (this says nothing about your wiring): " \
           "ZeroDivisionError: planted (at test_probe.py:" in result.checks["reach"].summary
    monkeypatch.setattr(measure, "locate_reversal", broken)
    monkeypatch.setattr(measure, "measure", broken)
    assert cli.main(["probe", "tests.selftest.probe_setups:correct"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "could not measure" in out.out


def test_under_compile_recompiles_and_fallbacks_are_counted():
    """The self-counting coefficient is a Python number that changes on every call: dynamo
    recompiles for each value and, past the recompile limit, runs eager without a word."""
    result = probe(setups.self_counting_per_domain(), compile=True)
    said = result.compile
    assert said["recompiles"] >= 8 and said["fell_back_to_eager"], said
    assert "recompiles, frames fell back to eager after the recompile limit" in said["line"]
    assert "Python number that changes between calls" in said["line"]
    assert "torch.compile: compiled:" in str(result)
    steady = probe(setups.correct(), compile=True).compile
    assert steady["graphs"] >= 1 and not steady["fell_back_to_eager"], steady


def test_a_backward_only_torch_compile_cannot_run_is_its_error_not_a_wiring_fail():
    """DomainBed's gradient penalty is a double backward, which AOTAutograd does not support:
    under --compile the backward raises where eager ran. That is torch.compile's limit."""
    from grl_conformance.dann_probe import _compile_errors
    from grl_conformance.dann_probe.verdicts import Verdict

    eager = [Verdict("reach", "pass", "fine"), Verdict("label_path", "fail", "the backward of "
                                                       "the label loss raised at p=0.1: X")]
    compiled = [Verdict("reach", "fail", "the backward of the domain loss raised at now: "
                        "RuntimeError: torch.compile with aot_autograd does not currently "
                        "support double backward"),
                Verdict("label_path", "fail", "the backward of the label loss raised at p=0.1: X")]
    out = _compile_errors(eager, compiled)
    assert out[0].status == "error" and out[0].summary.startswith(
        "torch.compile could not run it (eager: pass): the backward of the domain loss raised")
    assert out[1].status == "fail"  # eager failed it too: the wiring's own


def test_the_gan_style_miswiring_names_the_objective():
    summary = probe(setups.gan_style_sign_wrong()).checks["reversal"].summary
    assert "the objective that steps the trunk adds the domain loss (trunk objective = 1 x " \
           "label + 0.5 x domain)" in summary, summary
