"""End to end: a DANN trained through the GRL must really adapt (docs/checks.md, 'Train').

The two-moons problem of Ganin et al. (JMLR 2016, sec. 5.1.1), set up in `harness/checks/dann.py`:
5 seeds trained at once (stacked weights), the GRL under test applied to the stacked features
with alpha 6. A cell passes when, on every seed, the label head still learns the source
(source acc >= 0.95), the domain head cannot tell the domains apart (domain-head acc <= 0.78)
and the target does not collapse (target acc >= 0.70), and the mean target accuracy over the
seeds reaches 0.85 (the no-adaptation baseline reaches about 0.76). docs/train.md gives the
evidence behind each number.
"""
from __future__ import annotations

import time

from grl_conformance.checks import check, dann
from grl_conformance.core import compat
from grl_conformance.core.outcome import Errored, Failed, passed

CONCERN = "DANN"  # the advice table's column for this area's checks (core/check.py)


def _verdict(result: dann.Result, note: str, extra: str = ""):
    base = dann.baseline()
    detail = f"{result.summary_line()}; baseline target {base.mean_target:.3f}; {note}"
    problems = result.failures()
    if problems:
        raise Failed("did not adapt: " + "; ".join(problems) + ". " + detail,
                     summary=f"target {result.mean_target:.2f}{extra}")
    return passed(detail, summary=f"target {result.mean_target:.2f}{extra}")


@check("train.dann_moons")
def dann_moons(impl):
    """A GRL that passes unit checks can still fail to make a DANN adapt: train one and see."""
    layer = impl.api.layer(alpha=dann.ALPHA)
    start = time.perf_counter()
    result = dann.train(layer)
    train_s = time.perf_counter() - start
    return _verdict(result, f"{result.steps} steps eager {train_s:.1f} s")


@check("train.dann_moons_compiled")
def dann_moons_compiled(impl):
    """The same DANN with the model compiled by inductor must adapt just as well as eager."""
    layer = impl.api.layer(alpha=dann.ALPHA)
    first: list[int] = []
    start = time.perf_counter()
    with compat.fresh_dynamo() as counters:  # a fresh cache, never a silent eager run
        result = dann.train(layer, compile_backend="inductor",
                            after_first_step=lambda: first.append(counters["frames"]["total"]))
        graphs = counters["stats"]["unique_graphs"]
        breaks = sum(counters["graph_break"].values())
        frames = counters["frames"]["total"]
    train_s = time.perf_counter() - start
    if graphs == 0:
        raise Errored("torch.compile compiled nothing: the model ran eagerly, so this cell would "
                      "test eager training again", summary="not compiled")
    recompiles = frames - first[0]
    how = (f"inductor on forward+loss, Adam eager: {graphs} graph(s), {breaks} break(s), "
           f"{recompiles} recompile(s) after step 0; first step {result.compile_s:.1f} s, "
           f"{result.steps} steps {train_s:.1f} s")
    return _verdict(result, how, f", {recompiles} recompile(s)" if recompiles else "")


# --- contexts real training adds: mixed precision with a GradScaler (harness/checks/_contexts.py)

@check("amp.grad_scaler", concern="training tricks")
def amp_grad_scaler(impl):
    """A GradScaler step under autocast: gradients right, a domain-loss overflow skips the trunk's step."""
    from grl_conformance.checks import _contexts

    return _contexts.amp_grad_scaler(impl)
