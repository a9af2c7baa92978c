"""The GPU run's planning logic (harness/bench/gpu_report.py), cheaply: no matrix, no sweep, no GPU.

The whole command is proven by its dry run (docs/gpu.md); these tests pin what it would run on
a CUDA machine, that its limits fit the budget, and that a step is killed at its limit.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from grl_conformance.bench import gpu_report as gr


def _plan(device, tmp_path, plugin_flag=False):
    return gr.plan(device, tmp_path / "stage", tmp_path / "site", None, jobs=4,
                   python="python", plugin_flag=plugin_flag)


def _by_name(steps):
    return {s.name: s for s in steps}


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_limits_fit_the_budget(device, tmp_path):
    steps = _plan(device, tmp_path)
    assert gr.worst_case_s(steps, gr.CAPS[device]["probe"]) <= gr.BUDGET_S[device]
    assert all(s.cap_s >= gr.MIN_STEP_S for s in steps)


def test_cuda_plan_runs_everything_on_cuda(tmp_path):
    steps = _by_name(_plan("cuda", tmp_path))
    assert list(steps)[:3] == ["install", "matrix", "mutants"]
    matrix = steps["matrix"].argv
    assert "harness/conformance" in matrix and "--grl-no-builtin" not in matrix
    assert matrix[matrix.index("--grl-report-dir") + 1] == str(tmp_path / "stage" / "matrix")
    mutants = steps["mutants"].argv
    assert mutants[mutants.index("-k") + 1] == "cuda"
    sweeps = [s for n, s in steps.items() if n.startswith("sweep-")]
    got = {(a.argv[a.argv.index("--modes") + 1], a.argv[a.argv.index("--dtypes") + 1])
           for a in sweeps}
    assert got == {(m, d) for m in ("eager", "compiled") for d in ("float32", "bfloat16")}
    for s in sweeps:
        assert s.argv[s.argv.index("--device") + 1] == "cuda"
        assert s.argv[s.argv.index("--sizes") + 1] == "10:26:2"  # up to 2^26
        assert "--quick" not in s.argv and "--only" not in s.argv  # every row
    assert ("compiled", "float32", "model") in {
        (a.argv[a.argv.index("--modes") + 1], a.argv[a.argv.index("--dtypes") + 1],
         a.argv[a.argv.index("--contexts") + 1]) for a in sweeps if "--contexts" in a.argv}
    # nothing runs while the sweep times: every chunk is a group of its own, after the matrix
    groups = [s.group for s in sweeps]
    assert len(set(groups)) == len(groups) and min(groups) > steps["matrix"].group
    assert steps["matrix"].group == steps["mutants"].group  # these two overlap
    # eager float32 first: the chunk the matrix's ratio column and the README quote
    assert sweeps[0].name == "sweep-eager-float32"
    assert not any("CUDA_VISIBLE_DEVICES" in s.env for s in steps.values())
    assert [s.name for s in steps.values()][-1] == "report"


def test_dry_run_plan_hides_cuda_and_sweeps_quick(tmp_path):
    steps = _plan("cpu", tmp_path)
    assert all(s.env.get("CUDA_VISIBLE_DEVICES") == "" for s in steps)
    sweeps = [s for s in steps if s.name.startswith("sweep-")]
    assert sweeps and all("--quick" in s.argv for s in sweeps)
    assert all(s.argv[s.argv.index("--device") + 1] == "cpu" for s in sweeps)
    cuda_names = {s.name for s in _plan("cuda", tmp_path)}
    assert {s.name for s in steps} <= cuda_names  # same steps, fewer chunks (no bfloat16)


def test_plugin_flag_only_for_pytest_steps(tmp_path):
    for s in _plan("cuda", tmp_path, plugin_flag=True):
        has = "grl_conformance.plugin.pytest_plugin" in s.argv
        assert has == ("pytest" in s.argv), s.name


def test_at_most_eight_files():
    files = gr.expected_files("2.11.0-cuda-nvidia-h200")
    assert len(files) <= 8 and len(set(files)) == len(files)
    assert "compat-2.11.0-cuda-nvidia-h200.md" in files
    assert "latency-2.11.0-cuda-nvidia-h200.png" in files
    assert sum(f.endswith(".log") for f in files) == 1


def test_wheel_plan_never_touches_torch(tmp_path):
    for name in ("torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                 "numpy-2.4.6-py3-none-any.whl",
                 "nvidia_cublas_cu12-12.8.4.1-py3-none-manylinux_2_27_x86_64.whl",
                 "grl_fake_dependency-1.0-py3-none-any.whl",
                 "grl_fake_native-1.0-cp39-cp39-win_amd64.whl"):
        (tmp_path / name).write_bytes(b"")
    take, notes = gr._wheel_plan(tmp_path)
    assert [w.name for w in take] == ["grl_fake_dependency-1.0-py3-none-any.whl"]
    text = "\n".join(notes)
    assert "never installed here: torch-2.11.0" in text
    assert "never installed here: numpy" in text and "never installed here: nvidia_cublas" in text
    assert "not for this Python/platform: grl_fake_native" in text


def _step(name, code, cap, **kw):
    return gr.Step(name, [sys.executable, "-c", code], cap, group=1, **kw)


def test_a_step_is_killed_at_its_limit_and_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(gr, "MIN_STEP_S", 0.0)
    (tmp_path / "made").write_text("x")
    steps = [_step("slow", "import time; time.sleep(60)", 1.0),
             _step("findings", "raise SystemExit(1)", 30, findings_rcs=(1,)),
             _step("crash", "raise SystemExit(3)", 30, findings_rcs=(1,)),
             _step("no-output", "pass", 30, needs=("missing.json",)),
             _step("fine", "print('hi')", 30, needs=("made",))]
    import time

    t0 = time.monotonic()
    gr.run_group(steps, deadline=t0 + 100, reserve=0, env=dict(__import__("os").environ),
                 stage=tmp_path, say=lambda _text: None)
    assert time.monotonic() - t0 < 20
    status = {s.name: s.status for s in steps}
    assert status["slow"].startswith("TIMEOUT")
    assert status["findings"].startswith("ran, with findings")
    assert status["crash"].startswith("FAILED: exit 3")
    assert status["no-output"].startswith("FAILED") and "missing.json" in status["no-output"]
    assert status["fine"] == "ok" and "hi" in steps[-1].output
    assert [gr.ran(s) for s in steps] == [False, True, False, False, True]


def test_no_step_starts_without_budget(tmp_path):
    import time

    steps = [_step("late", "pass", 30)]
    gr.run_group(steps, deadline=time.monotonic() + 5, reserve=0, env={}, stage=tmp_path,
                 say=lambda _text: None)
    assert steps[0].status.startswith("not run") and not gr.ran(steps[0])


def _fake_sweep(mode, dtype):
    results = []
    for subject, role, med in (("floor", "baseline", 1.0), ("grl", "row", 2.0)):
        for phase in ("fwdbwd", "bwd"):
            results.append({"subject": subject, "role": role, "context": "alone", "mode": mode,
                            "dtype": dtype, "phase": phase, "exp": 24, "median_s": med,
                            "ratio_floor": med, "iqr_s": 0.0})
    return {"schema": 1, "kind": "grl-latency-sweep", "torch": "2.11.0", "python": "3.12",
            "device": "NVIDIA H200", "device_slug": "cuda-nvidia-h200", "created": "now",
            "duration_s": 10.0, "rows": [{"name": "grl", "kind": "function", "origin": "x",
                                          "status": "ok"}],
            "config": {"modes": [mode], "dtypes": [dtype]}, "results": results,
            "errors": [], "compile_s": [], "kernels": {}}


def test_merge_sweeps_keeps_every_chunk(tmp_path):
    docs = [_fake_sweep(m, d) for m, d in (("eager", "float32"), ("compiled", "bfloat16"))]
    merged = gr.merge_sweeps(docs, {"grl": {"extra": 0}})
    assert merged["config"]["modes"] == ["eager", "compiled"]
    assert merged["config"]["dtypes"] == ["float32", "bfloat16"]
    assert len(merged["results"]) == 8 and merged["duration_s"] == 20.0
    row = merged["summary"]["rows"]["grl"]
    assert row["eager"]["ratio_floor"] == 2.0 and row["kernels"] == {"extra": 0}


def test_matrix_slug_matches_the_plugins_file_name():
    assert gr._slug_of_matrix({"device": "cpu (x86_64, 2 cores, no CUDA)"}) == "cpu"
    assert (gr._slug_of_matrix({"device": "NVIDIA H200 (CUDA 12.8, 1 GPU)"})
            == "cuda-nvidia-h200")


def test_readme_and_makefile_point_here():
    root = Path(gr.__file__).resolve().parents[2]
    assert "gpu-report:" in (root / "Makefile").read_text()
    assert "docs/gpu.md" in (root / "README.md").read_text()
