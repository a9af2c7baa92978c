"""The reversal probe: is the GRL in the user's own DANN model doing anything?

The matrix judges GRL implementations; this judges a user's wiring. Given their model, a batch,
their losses and which submodules are the trunk and the heads (a spec, docs/probe.md), it
measures, without training and without changing anything it touches:

- reach: the domain loss's gradient arrives at the trunk's output;
- reversal: there it is -alpha times the gradient at the domain head's input, alpha > 0;
- schedule: alpha follows the user's `set_progress`;
- label_path: the label loss arrives unreversed;
- domain_head_learns: a small step along the objective lowers the domain loss;
- optimizer: every trainable parameter of the trunk and heads is in the optimizer.

`probe(spec)` returns a `ProbeResult` (`.ok`, per-check verdicts, printable); `grl-harness probe
MODULE:ATTR` is the command-line form. Flow: spec -> state (snapshot) -> watch (the forwards) ->
pairing -> measure, training -> verdicts -> `grl_conformance.results.probe_report` (the
documents, no torch).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from grl_conformance.dann_probe.spec import ProbeInputError, Spec, from_dict, load

__all__ = ["ProbeInputError", "ProbeResult", "Spec", "from_dict", "load", "probe"]

EAGER, COMPILED = "eager", "compiled"


@dataclass
class ProbeResult:
    """What the probe found: `.ok` (no check failed), `.checks` (eager verdicts by id),
    `.compiled` (the same under torch.compile, or None), `.differences`; `str()` is the table."""

    name: str
    runs: dict = field(default_factory=dict)   # mode -> list[Verdict]
    env: dict = field(default_factory=dict)
    duration_s: float = 0.0
    compile: dict = field(default_factory=dict)  # what torch.compile did (compile_watch.py)
    notes: list = field(default_factory=list)    # what the probe did beyond the spec's words

    @property
    def checks(self) -> dict:
        return {v.check: v for v in self.runs.get(EAGER, [])}

    @property
    def compiled(self) -> dict | None:
        return {v.check: v for v in self.runs[COMPILED]} if COMPILED in self.runs else None

    @property
    def ok(self) -> bool:
        """No check failed or errored, and none was left unverified in any mode: a skip is fine
        only where the spec did not ask (no set_progress, label_head or optimizer), never where
        the measurement could not be made."""
        from grl_conformance.core.outcome import ERROR, FAIL

        return all(v.status not in (FAIL, ERROR) and not v.unverified
                   for run in self.runs.values() for v in run)

    @property
    def differences(self) -> list[str]:
        if COMPILED not in self.runs:
            return []
        compiled = self.compiled
        return [f"{v.check}: eager {v.status} ({v.summary}); compiled {compiled[v.check].status} "
                f"({compiled[v.check].summary})"
                for v in self.runs[EAGER] if compiled[v.check].status != v.status]

    def as_dict(self) -> dict:
        from grl_conformance.results import probe_report

        return probe_report.build(self.name, self.env, self.duration_s,
                                  {mode: [v.as_dict() for v in run] for mode, run in self.runs.items()},
                                  self.differences, self.ok, compile=self.compile, notes=self.notes)

    def __str__(self) -> str:
        from grl_conformance.results import probe_report

        return probe_report.render_terminal(self.as_dict())


def _run(spec: Spec, losses, snapshot, compiled: bool) -> list:
    """Every check's verdict in one mode; an exception that is not the spec's fault becomes an
    `error` verdict for each check saying the probe could not measure (never a traceback)."""
    from grl_conformance.core.outcome import describe_failure
    from grl_conformance.dann_probe import measure, training, verdicts

    try:
        passes = [measure.measure(spec, losses, p, snapshot.rng.reset, compiled) for p in spec.points]
        step = training.step_domain_head(spec, losses, spec.points[-1], snapshot.rng.reset,
                                        snapshot.restore_parameters)
        m = verdicts.Measurements(spec, passes, step)
        return [fn(m) for _, fn in verdicts.CHECKS]
    except ProbeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the probe's own limit, named, not a wiring verdict
        return _errored(f"the probe could not measure (this says nothing about your wiring): "
                        f"{describe_failure(exc)}")


def _compile_errors(eager: list, compiled: list) -> list:
    """A backward that raises only under torch.compile (AOTAutograd has no double backward, say)
    is torch.compile's failure, not the wiring's: that verdict becomes an `error` saying so."""
    from dataclasses import replace

    from grl_conformance.core.outcome import ERROR, FAIL

    said = {v.check: v for v in eager}
    return [replace(v, status=ERROR, summary=f"torch.compile could not run it (eager: "
                    f"{said[v.check].status}): {v.summary}")
            if v.status == FAIL and "raised" in v.summary and said[v.check].status != FAIL else v
            for v in compiled]


def _errored(message: str) -> list:
    from grl_conformance.core.outcome import ERROR
    from grl_conformance.dann_probe import verdicts

    return [verdicts.Verdict(name, ERROR, message) for name, _ in verdicts.CHECKS]


def probe(spec, *, compile: bool = False, name: str | None = None) -> ProbeResult:
    """Probe a DANN setup (a spec dict or `Spec`); raises ProbeInputError for a spec that
    cannot be probed. `compile=True` also probes `torch.compile(spec['losses'])`.

        result = grl_conformance.probe(make_spec())
        assert result.ok, result
    """
    import torch

    from grl_conformance.core.env import describe
    from grl_conformance.dann_probe import measure
    from grl_conformance.dann_probe.compile_watch import CompileWatch
    from grl_conformance.dann_probe.state import preserved

    spec = from_dict(spec, name=name or "spec")
    if spec.alpha is not None:
        for p in spec.progress:
            spec.expected_alpha(p)  # a formula that raises is a spec error, before anything runs
    start = time.perf_counter()
    result = ProbeResult(name or spec.name, env=describe())
    with preserved(spec.model, spec.optimizers) as snapshot, torch.enable_grad():
        try:
            found = measure.locate_reversal(spec, spec.losses, spec.points[-1], snapshot.rng.reset)
        except ProbeInputError:
            raise
        except Exception:  # noqa: BLE001 - the measurements below report what went wrong
            found = ""
        if found:
            result.notes.append(found)
        snapshot.restore()
        snapshot.quiet_dropout()
        result.runs[EAGER] = _run(spec, spec.losses, snapshot, compiled=False)
        if compile:
            snapshot.restore()
            snapshot.quiet_dropout()
            watch = CompileWatch()
            with watch:
                try:
                    result.runs[COMPILED] = _run(spec, torch.compile(spec.losses, backend=watch.backend),
                                                 snapshot, compiled=True)
                except ProbeInputError as exc:  # eager ran: under compile it is the compile's failure
                    result.runs[COMPILED] = _errored(f"under torch.compile: {exc}")
            result.compile = watch.summary()
            result.runs[COMPILED] = _compile_errors(result.runs[EAGER], result.runs[COMPILED])
    result.duration_s = time.perf_counter() - start
    return result
