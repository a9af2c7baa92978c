"""Installing and importing the harness changes nothing in the user's process; the matrix's own
pins live in the sandbox's processes and do not depend on the machine's environment."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SNAPSHOT = """
import json, os, sys
def snap():
    import torch
    import torch._dynamo.config as dc
    return {"env": dict(os.environ), "path": list(sys.path),
            "torch": [torch.is_grad_enabled(), str(torch.get_default_dtype()),
                      torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()],
            "dynamo": {k: repr(v) for k, v in dc.get_config_copy().items()},
            "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "hypothesis"))}
before = snap()
import grl_conformance, grl_conformance.plugin.pytest_plugin, grl_conformance.plugin.gate
import grl_conformance.cli
after = snap()
print(json.dumps({k: before[k] == after[k] for k in before}))
"""


def test_importing_the_package_and_its_plugin_changes_nothing():
    """os.environ, sys.path, torch's and dynamo's settings and the loaded modules are as before."""
    out = subprocess.run([sys.executable, "-c", SNAPSHOT], cwd="/", capture_output=True,
                         text=True, env={**os.environ, "CI": "true"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "env": True, "path": True, "torch": True, "dynamo": True, "modules": True}


def test_importing_the_package_imports_no_torch():
    code = ("import sys, grl_conformance, grl_conformance.plugin.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hypothesis')))")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def _aliasing_is_an_error(conn):
    import torch._functorch.config as c

    conn.send((c.error_on_custom_op_aliasing, os.environ.get("CI")))


FORKSERVER = """
import sys
sys.path.insert(0, {root!r})
from grl_conformance.isolation import server
from tests.selftest.test_environment import _aliasing_is_an_error
ctx = server.context()
a, b = ctx.Pipe()
p = ctx.Process(target=_aliasing_is_an_error, args=(b,))
p.start(); print(a.recv()); p.join()
import os; print(os.environ.get("TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING"))
"""


def test_custom_op_aliasing_is_a_warning_in_the_sandbox_even_under_ci():
    """torch makes custom-op aliasing an error when CI is set; the sandbox's processes pin the
    user default, so a CI run and a laptop run give the same cells (seen: 8 tgr cells flipped to
    error), while the calling process keeps its environment as it was."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING"}
    out = subprocess.run([sys.executable, "-c", FORKSERVER.format(root=str(ROOT))], cwd="/",
                         capture_output=True, text=True, env={**env, "CI": "true"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(False,", "'true')", "None"]
