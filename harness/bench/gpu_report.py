"""`make gpu-report OUT=DIR`: the whole CUDA run in one go, offline, inside a fixed time budget.

    python -m grl_conformance.bench.gpu_report OUTDIR [--dry-run] [--wheels DIR] [--budget SECONDS]

Steps (each a child process with its own time limit, killed with its process group at the
limit, so one slow step cannot eat the budget; later steps get what is left):

1. probe    torch version, CUDA, device slug (no CUDA context in this driver process)
2. install  the wheels brought along (`.whl/` by default) and the project, into a --target
            site under build/, with pip --no-index --no-deps (no network, torch never touched)
3. matrix   every row, the published packages included, every area (pytest route)
   mutants  the CUDA mutants of the self-tests (`-k cuda`); runs alongside the matrix
4. sweep    the latency sweep in chunks (mode x dtype), most important first; a chunk killed
            at its limit costs that chunk only. Then the inductor kernel counts.
5. report   merges the chunks, writes latency md/json/png, annotates the matrix with them

At most 8 files land in OUTDIR: compat-<slug>.{md,json}, latency-<slug>.{md,json,png} and
gpu-report-<slug>.log (every step's command, output, wall time and status). Exit status 0
when every step ran to its end (red cells and failing self-tests are findings, in the log),
1 when a step timed out, crashed or was left out for lack of budget.

Without CUDA (or with --dry-run) the same steps run on CPU: CUDA cells skip, the sweep is
`--quick`. docs/gpu.md says how to run it on a GPU machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (harness/bench/ is two down)
BUDGET_S = {"cuda": 480.0, "cpu": 720.0}  # the whole run, wall clock; cpu = the dry run
REPORT_RESERVE_S = 20.0   # kept back for the report step, whatever the earlier steps take
MIN_STEP_S = 10.0         # a step with less than this left is not started
PARALLEL_GROUPS = (2,)    # the matrix and the mutants share the machine (no timing there)
NEVER_INSTALL = ("torch", "numpy", "triton", "pytorch-triton")  # and nvidia-* (CUDA libraries)

# Sweep chunks, most important first: (mode, dtype, context or None for both). Compiled chunks
# are split by context (a compile per subject is the slow part), so a killed chunk loses less.
CHUNKS = {"cuda": [("eager", "float32", None), ("compiled", "float32", "alone"),
                   ("compiled", "float32", "model"), ("eager", "bfloat16", None),
                   ("compiled", "bfloat16", "alone"), ("compiled", "bfloat16", "model")],
          "cpu": [("eager", "float32", None), ("compiled", "float32", "alone"),
                  ("compiled", "float32", "model")]}
# Per-step limits (seconds); the worst case (the matrix and the mutants overlap) is the budget.
# On 2 shared CPU cores the matrix alone took 230-240 s: the dry run has more time.
CAPS = {
    "cuda": {"probe": 30, "install": 30, "matrix": 180, "mutants": 120,
             "sweep-eager-float32": 35, "sweep-compiled-float32-alone": 30,
             "sweep-compiled-float32-model": 30, "sweep-eager-bfloat16": 30,
             "sweep-compiled-bfloat16-alone": 25, "sweep-compiled-bfloat16-model": 25,
             "kernels": 25, "report": 20},
    "cpu": {"probe": 30, "install": 45, "matrix": 330, "mutants": 120,
            "sweep-eager-float32": 90, "sweep-compiled-float32-alone": 60,
            "sweep-compiled-float32-model": 60, "kernels": 60, "report": 20},
}
CUDA_SIZES = "10:26:2"
CUDA_MIN_RUN_TIME = "0.02"   # 9 sizes x 3 phases x ~14 subjects per chunk must fit its limit
# On 2 CPU cores inductor needs ~5-10 s a subject: the dry run compiles four reference rows.
CPU_COMPILED_ONLY = "naive_function,hook,detach,library_op"


def chunk_name(mode: str, dtype: str, context: str | None) -> str:
    return f"sweep-{mode}-{dtype}" + (f"-{context}" if context else "")


@dataclass
class Step:
    name: str
    argv: list[str]
    cap_s: float
    group: int                       # steps of one group run at the same time
    ok_rcs: tuple[int, ...] = (0,)   # exit codes that mean "ran to its end"
    findings_rcs: tuple[int, ...] = ()  # exit codes that mean "ran, with findings"
    env: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()      # files (relative to the stage) that must exist afterwards
    # filled in when it runs
    status: str = "not run"
    rc: int | None = None
    wall_s: float = 0.0
    limit_s: float = 0.0
    output: str = ""


def plan(device: str, stage: Path, site: Path, wheels: Path | None, jobs: int,
         python: str = sys.executable, plugin_flag: bool = False) -> list[Step]:
    """The steps after the probe, in order; pure (no torch, nothing run): the self-test checks it.

    device: "cuda" or "cpu" (cpu = the dry run). plugin_flag: load the pytest plugin with
    `-p grl_conformance.plugin.pytest_plugin` (when the project could not be installed and runs from source).
    """
    caps = CAPS[device]
    me = [python, "-m", "grl_conformance.bench.gpu_report"]
    plugin = ["-p", "grl_conformance.plugin.pytest_plugin"] if plugin_flag else []
    steps = [Step("install", me + ["--_install", str(site), str(wheels or "")],
                  caps["install"], group=1)]
    steps.append(Step("matrix",
                      [python, "-m", "pytest", "harness/conformance", "-n", str(jobs), *plugin,
                       "-p", "no:cacheprovider", "-q", "--grl-report-dir", str(stage / "matrix"),
                       "--grl-timeout", "90"],
                      caps["matrix"], group=2, findings_rcs=(1,), needs=("matrix/latest.json",)))
    steps.append(Step("mutants",
                      [python, "-m", "pytest", "tests/selftest/test_mutants.py", "-k", "cuda",
                       *plugin, "-p", "no:cacheprovider", "-p", "no:xdist", "-q"],
                      caps["mutants"], group=2, findings_rcs=(1,)))
    group = 2
    for mode, dtype, context in CHUNKS[device]:
        name = chunk_name(mode, dtype, context)
        argv = [python, "-m", "grl_conformance.cli", "sweep", "--device", device, "--modes", mode,
                "--dtypes", dtype, "--out", str(stage / name), "--no-plot", "--no-kernels"]
        if context:
            argv += ["--contexts", context]
        if device == "cuda":
            argv += ["--sizes", CUDA_SIZES, "--min-run-time", CUDA_MIN_RUN_TIME]
        else:
            argv += ["--quick"]
            if mode == "compiled":
                argv += ["--only", CPU_COMPILED_ONLY]
        group += 1  # one at a time: nothing else runs while the sweep times
        steps.append(Step(name, argv, caps[name], group=group,
                          needs=(f"{name}/latency-latest.json",)))
    steps.append(Step("kernels", me + ["--_kernels", device, str(stage / "kernels.json")]
                      + (["--only", CPU_COMPILED_ONLY] if device == "cpu" else []),
                      caps["kernels"], group=group + 1, needs=("kernels.json",)))
    steps.append(Step("report", me + ["--_report", str(stage)], caps["report"], group=group + 2,
                      needs=("final",)))
    for s in steps:
        if device == "cpu":
            s.env["CUDA_VISIBLE_DEVICES"] = ""  # --dry-run on a CUDA machine: CUDA parts skip
    return steps


def worst_case_s(steps: list[Step], probe_cap: float) -> float:
    """The run's longest possible wall time from the caps (steps of a group overlap)."""
    groups: dict[int, float] = {}
    for s in steps:
        if s.group in PARALLEL_GROUPS:
            groups[s.group] = max(groups.get(s.group, 0.0), s.cap_s)
        else:
            groups[s.group] = groups.get(s.group, 0.0) + s.cap_s
    return probe_cap + sum(groups.values())


def expected_files(slug: str) -> list[str]:
    return [f"compat-{slug}.md", f"compat-{slug}.json", f"latency-{slug}.md",
            f"latency-{slug}.json", f"latency-{slug}.png", f"gpu-report-{slug}.log"]


# --- running steps --------------------------------------------------------------------------

def _kill(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_group(steps: list[Step], deadline: float, reserve: float, env: dict, stage: Path,
              say) -> None:
    """Start the steps together; each ends at its own limit (or at the deadline)."""
    running = []
    for s in steps:
        left = deadline - reserve - time.monotonic()
        s.limit_s = round(min(s.cap_s, left), 1)
        if s.limit_s < MIN_STEP_S:
            s.status = f"not run: {max(left, 0):.0f} s of the budget left"
            say(f"[{s.name}] {s.status}")
            continue
        log = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        proc = subprocess.Popen(s.argv, cwd=ROOT, env={**env, **s.env}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        say(f"[{s.name}] started, limit {s.limit_s:g} s")
        running.append((s, proc, log, time.monotonic()))
    while running:
        time.sleep(0.2)
        for item in list(running):
            s, proc, log, t0 = item
            timed_out = time.monotonic() - t0 > s.limit_s
            if proc.poll() is None and not timed_out:
                continue
            if proc.poll() is None:
                _kill(proc)
                s.status = f"TIMEOUT: killed at its limit of {s.limit_s:g} s"
            s.rc, s.wall_s = proc.returncode, round(time.monotonic() - t0, 1)
            log.seek(0)
            s.output = log.read()
            log.close()
            if not timed_out:
                missing = [n for n in s.needs if not (stage / n).exists()]
                if s.rc in s.ok_rcs and not missing:
                    s.status = "ok"
                elif s.rc in s.findings_rcs and not missing:
                    s.status = f"ran, with findings (exit {s.rc}; see its output)"
                else:
                    s.status = (f"FAILED: exit {s.rc}"
                                + (f", missing {', '.join(missing)}" if missing else ""))
            say(f"[{s.name}] {s.status} ({s.wall_s:g} s)")
            running.remove(item)


def ran(step: Step) -> bool:
    return step.status == "ok" or step.status.startswith("ran,")


# --- the driver -----------------------------------------------------------------------------

def _probe(env: dict, dry_run: bool, cap: float) -> dict:
    code = ("import json, torch; from grl_conformance.core import env; "
            "print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available(), "
            "'slug': env.device_slug(), 'torch_file': torch.__file__, "
            "'device': env.describe()['device']}))")
    penv = {**env, **({"CUDA_VISIBLE_DEVICES": ""} if dry_run else {})}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=penv, capture_output=True,
                         text=True, timeout=cap, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grl_conformance.bench.gpu_report",
                                     description="The GPU run in one go (docs/gpu.md).")
    parser.add_argument("out", nargs="?", help="output folder (at most 8 files are written)")
    parser.add_argument("--dry-run", action="store_true",
                        help="skip the CUDA parts (automatic without CUDA): CUDA cells skip, "
                             "the sweep runs --quick on CPU")
    parser.add_argument("--wheels", default=None, metavar="DIR",
                        help="wheels brought along (default: .whl/ in the repo root, if present)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help=f"wall-clock budget for the whole run (default {BUDGET_S['cuda']:g} "
                             f"on CUDA, {BUDGET_S['cpu']:g} for the dry run on CPU)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="pytest-xdist workers for the matrix (default: cores - 2, 2..12)")
    parser.add_argument("--site", default=str(ROOT / "build" / "gpu-report-site"),
                        help="pip --target folder for the install (recreated each run)")
    # internal steps, run as child processes by the driver
    parser.add_argument("--_install", nargs=2, metavar=("SITE", "WHEELS"), help=argparse.SUPPRESS)
    parser.add_argument("--_kernels", nargs=2, metavar=("DEVICE", "JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--only", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_report", metavar="STAGE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._install:
        return install(Path(args._install[0]), Path(args._install[1]) if args._install[1] else None)
    if args._kernels:
        return count_kernels(args._kernels[0], Path(args._kernels[1]), args.only)
    if args._report:
        return build_reports(Path(args._report))
    if not args.out:
        parser.error("OUTDIR is required")
    return drive(args)


def drive(args) -> int:
    start = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="gpu-report-"))
    site = Path(args.site).resolve()
    wheels = Path(args.wheels).resolve() if args.wheels else (ROOT / ".whl")
    wheels = wheels if wheels.is_dir() else None
    lines: list[str] = []

    def say(text: str) -> None:
        stamp = f"{time.monotonic() - start:6.1f}s"
        print(f"gpu-report {stamp} {text}", flush=True)
        lines.append(f"{stamp} {text}")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    say(f"command: {' '.join([sys.executable, '-m', 'grl_conformance.bench.gpu_report', *sys.argv[1:]])}")
    say(f"stage {stage}; site {site}; wheels {wheels or 'none'}")
    try:
        probe = _probe(env, args.dry_run, CAPS["cuda"]["probe"])
    except Exception as exc:  # noqa: BLE001 - without torch nothing else can run
        say(f"[probe] FAILED: {exc}")
        _write_log(out / "gpu-report-unknown.log", lines, [], start)
        return 1
    device = "cuda" if probe["cuda"] and not args.dry_run else "cpu"
    slug = f"{probe['torch'].split('+')[0]}-{probe['slug'] if device == 'cuda' else 'cpu'}"
    say(f"[probe] torch {probe['torch']} ({probe['torch_file']}), {probe['device']}; "
        f"{'CUDA run' if device == 'cuda' else 'dry run on CPU (CUDA parts skipped)'}")
    budget = args.budget or BUDGET_S[device]
    deadline = start + budget
    jobs = args.jobs or min(12, max(2, (os.cpu_count() or 2) - 2))
    steps = plan(device, stage, site, wheels, jobs)
    say(f"plan: {', '.join(s.name for s in steps)}; worst case "
        f"{worst_case_s(steps, CAPS[device]['probe']):.0f} s; budget {budget:g} s")
    for group in sorted({s.group for s in steps}):
        members = [s for s in steps if s.group == group]
        reserve = 0.0 if group == steps[-1].group else REPORT_RESERVE_S
        run_group(members, deadline, reserve, env, stage, say)
        if group == 1:
            installed = _install_result(site)
            if not installed.get("plugin"):  # run from the source tree, plugin named explicitly
                fixed = {s.name: s for s in plan(device, stage, site, wheels, jobs,
                                                 plugin_flag=True)}
                for s in steps:
                    if s.group > 1:
                        s.argv = fixed[s.name].argv
                say("the project is not installed: running from the source tree "
                    "(pytest -p grl_conformance.plugin.pytest_plugin)")
            if installed.get("torch") and installed["torch"] != probe["torch"]:
                say(f"WARNING: torch changed during install: {installed['torch']}")
    written = _collect(stage, out, slug, say)
    log_path = out / f"gpu-report-{slug}.log"
    ok = all(ran(s) for s in steps)
    say(f"done in {time.monotonic() - start:.0f} s: "
        f"{'every step ran' if ok else 'NOT every step ran'}; files: "
        + ", ".join(p.name for p in written + [log_path]))
    _write_log(log_path, lines, steps, start)
    shutil.rmtree(stage, ignore_errors=True)
    return 0 if ok else 1


def _install_result(site: Path) -> dict:
    try:
        return json.loads((site / ".grl-install.json").read_text())
    except (OSError, ValueError):
        return {}


def _collect(stage: Path, out: Path, slug: str, say) -> list[Path]:
    """Copy the report files into OUT: the report step's, else the raw matrix files."""
    written = []
    for name in expected_files(slug)[:-1]:
        for src in (stage / "final" / name, stage / "matrix" / name):
            if src.exists():
                shutil.copyfile(src, out / name)
                written.append(out / name)
                break
        else:
            say(f"not written: {name}")
    return written


def _write_log(path: Path, lines: list[str], steps: list[Step], start: float) -> None:
    from tabulate import tabulate

    table = tabulate([[s.name, s.status, s.wall_s, s.limit_s, s.rc] for s in steps],
                     headers=["step", "status", "wall s", "limit s", "exit"], tablefmt="github")
    parts = ["# gpu-report log", "", *lines, "", table, ""]
    for s in steps:
        parts += ["", f"===== {s.name}: {s.status}, {s.wall_s} s (limit {s.limit_s} s, exit {s.rc})",
                  "$ " + " ".join(s.argv), s.output.rstrip()]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


# --- step: install --------------------------------------------------------------------------

def _wheel_plan(wheels: Path | None) -> tuple[list[Path], list[str]]:
    """Wheels to install and why the others are left out (incompatible, protected, present)."""
    import importlib.metadata as md

    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.tags import sys_tags
        from pip._vendor.packaging.utils import parse_wheel_filename
    supported = set(sys_tags())
    take, notes = [], []
    for whl in sorted(wheels.glob("*.whl")) if wheels else []:
        name, version, _, tags = parse_wheel_filename(whl.name)
        if name in NEVER_INSTALL or name.startswith("nvidia-"):
            notes.append(f"never installed here: {whl.name}")
        elif not tags & supported:
            notes.append(f"not for this Python/platform: {whl.name}")
        else:
            try:
                have = md.version(name)
                notes.append(f"already installed: {name} {have} (wheel {version} left out)")
            except md.PackageNotFoundError:
                take.append(whl)
    return take, notes


def install(site: Path, wheels: Path | None) -> int:
    """pip --no-index --no-deps into a fresh --target site: the wheels, then the project."""
    import torch  # noqa: F401 - what torch is before: it must be the same after

    before = (torch.__version__, torch.__file__)
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
           "--disable-pip-version-check", "--target", str(site)]
    take, notes = _wheel_plan(wheels)
    for note in notes:
        print(note)
    result = {"wheels": [w.name for w in take], "project": False}
    if take:
        print("installing wheels:", ", ".join(w.name for w in take), flush=True)
        if subprocess.run(pip + [str(w) for w in take]).returncode:
            print("the wheels did not install (above); their rows and columns will say what "
                  "is missing", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    build = subprocess.run(pip + ["--no-build-isolation", str(ROOT)], env=env)
    if build.returncode == 0:
        result["project"] = True
        print(f"project installed into {site}")
    else:
        print("the project did not install (setuptools missing? bring its wheel along): "
              "it runs from the source tree instead", flush=True)
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    shutil.rmtree(ROOT / "build" / "bdist.linux-x86_64", ignore_errors=True)
    after = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__); "
                            "print(torch.__file__)"], env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    result["torch"] = after[0]
    # is the pytest plugin visible (this install, or one already in the environment)?
    probe = ("import importlib.metadata as m; print(any(e.name == 'grl_conformance' "
             "for e in m.entry_points(group='pytest11')))")
    result["plugin"] = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                                      text=True).stdout.strip() == "True"
    print(f"pytest plugin entry point visible: {result['plugin']}")
    print(f"torch before {before[0]} ({before[1]}), after {after[0]} ({after[1]})")
    (site / ".grl-install.json").write_text(json.dumps(result))
    if tuple(after) != before:
        print("torch changed: the install must not touch torch")
        return 1
    return 0


# --- step: kernel counts --------------------------------------------------------------------

def count_kernels(device: str, path: Path, only: str = "") -> int:
    """Inductor's extra kernels per row (as the sweep counts them), written after every row so
    a step killed at its limit keeps what it counted."""
    import warnings

    import torch
    from torch._dynamo import config as dynamo_config
    from torch._functorch import config as functorch_config

    from grl_conformance.bench import sweep
    from grl_conformance.core import registry

    names = [n for n in only.split(",") if n] or None
    counts: dict[str, dict] = {}
    x = torch.randn(1 << 12, device=device)
    with functorch_config.patch(donated_buffer=False), dynamo_config.patch(recompile_limit=64):
        # as sweep.extra_kernels, with the model without a GRL counted once, not once a row
        without = sweep.inductor_kernels(sweep.Model(None).to(device), x)
        print(f"model without a GRL: {without} kernels", flush=True)
        for impl in registry.collect([], names):
            t0 = time.monotonic()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    layer = impl.api.layer(alpha=sweep.ALPHA)
                    with_grl = sweep.inductor_kernels(sweep.Model(layer).to(device), x)
                counts[impl.name] = {"with": with_grl, "without": without,
                                     "extra": with_grl - without}
            except Exception as exc:  # noqa: BLE001 - one row's error is its entry
                counts[impl.name] = {"error": sweep._error_text(exc)}
            print(f"{impl.name}: {counts[impl.name]} ({time.monotonic() - t0:.1f} s)", flush=True)
            path.write_text(json.dumps(counts))
    return 0


# --- step: reports --------------------------------------------------------------------------

def merge_sweeps(docs: list[dict], kernels: dict | None = None, derive=None) -> dict:
    """One sweep document from chunk documents (each its own mode x dtype slice, each with its
    baselines, so every ratio was taken within one chunk)."""
    from grl_conformance.results import latency as latency_report

    first = docs[0]
    doc = {k: v for k, v in first.items() if k not in ("results", "errors", "compile_s", "summary")}
    doc["config"] = dict(first["config"])
    for key in ("dtypes", "modes"):
        doc["config"][key] = list(dict.fromkeys(v for d in docs for v in d["config"][key]))
    for key in ("contexts",):
        doc["config"][key] = list(dict.fromkeys(v for d in docs for v in d["config"].get(key, [])))
    doc["config"]["chunks"] = ["/".join(d["config"][k][0] if len(d["config"].get(k, [])) == 1
                                        else "all" for k in ("modes", "dtypes", "contexts"))
                               for d in docs]
    rows: dict[str, dict] = {}
    for d in docs:
        for row in d["rows"]:
            if row["name"] not in rows or row.get("status") == "error":
                rows[row["name"]] = row
    doc["rows"] = list(rows.values())
    doc["results"] = [r for d in docs for r in d["results"]]
    if derive is not None:  # ratios across chunks: a model chunk's floor is in the alone chunk
        derive(doc["results"])
    doc["errors"] = [e for d in docs for e in d["errors"]]
    doc["compile_s"] = [c for d in docs for c in d.get("compile_s", [])]
    doc["kernels"] = kernels or {}
    doc["duration_s"] = round(sum(d["duration_s"] for d in docs), 1)
    doc["summary"] = latency_report.summarise(doc)
    return doc


def build_reports(stage: Path) -> int:
    """Merge the sweep chunks; write the latency files; put the sweep into the matrix."""
    from grl_conformance.results import latency as latency_report
    from grl_conformance.results import report

    final = stage / "final"
    final.mkdir(exist_ok=True)
    docs = []
    for chunk in sorted(stage.glob("sweep-*/latency-latest.json")):
        docs.append(latency_report.load(chunk))
        print(f"sweep chunk: {chunk.parent.name}")
    kpath = stage / "kernels.json"
    kernels = json.loads(kpath.read_text()) if kpath.exists() else None
    sweep_doc = None
    if docs:
        from grl_conformance.bench.sweep import _derive

        sweep_doc = merge_sweeps(docs, kernels, derive=_derive)
        for p in latency_report.write(sweep_doc, final, plot_png=True):
            print(f"written: {p.name}")
        (final / latency_report.LATEST).unlink(missing_ok=True)
    matrix = stage / "matrix" / "latest.json"
    if matrix.exists():
        doc = report.load(matrix)
        if sweep_doc is not None and sweep_doc["device_slug"] == _slug_of_matrix(doc):
            for impl in doc["impls"]:  # this run's sweep, not one found in reports/
                impl.pop("latency", None)
            latency_report.annotate(doc["impls"], sweep_doc, source="latency sweep (gpu-report)")
        slug = f"{doc['torch'].split('+')[0]}-{_slug_of_matrix(doc)}"
        for p in report.write(doc, final, slug):
            print(f"written: {p.name}")
        (final / "latest.json").unlink(missing_ok=True)
    return 0


def _slug_of_matrix(doc: dict) -> str:
    """The matrix's device slug, as the plugin named its files (compat-<torch>-<slug>.json)."""
    import re

    device = doc["device"]
    if device.startswith("cpu"):
        return "cpu"
    name = device.split(" (")[0]
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


if __name__ == "__main__":
    sys.exit(main())
