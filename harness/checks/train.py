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

import torch

from grl_conformance.checks import check, dann
from grl_conformance.checks.kit.inputs import CONTEXT_ALPHA, batch
from grl_conformance.checks.kit.judge import at, judge_grads, weights_moved
from grl_conformance.checks.kit.models import Dann, dann_loss, grads_of
from grl_conformance.core import compat
from grl_conformance.core.outcome import Errored, Failed, passed
from grl_conformance.core.reference import ReferenceGRL
from grl_conformance.core.tolerances import dtype_name

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


# --- contexts real training adds: mixed precision with a GradScaler (docs/contexts.md) -----

def _scaler_run(grl, device: str, dtype: torch.dtype):
    """Two DANN steps with a GradScaler and two optimizers (trunk+task, domain head); the
    second step's domain loss overflows. Returns per step (grads after unscale, trunk weight
    before/after, scale before/after)."""
    model = Dann(grl).to(device)
    main = torch.optim.SGD([*model.trunk.parameters(), *model.task.parameters()], lr=0.1)
    dom = torch.optim.SGD(model.domain.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 16, growth_interval=1000)
    record = []
    for step, overflow in ((0, False), (1, True)):
        x, ct, cd = (t.to(device) for t in batch(step))
        if overflow:
            cd = cd.clone()
            cd[0, 0] = 1e36  # x 2**16 scale: inf in float32, as a real fp16 overflow would be
        main.zero_grad(set_to_none=True)
        dom.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype):
            outputs = model(x)
        scaler.scale(dann_loss(outputs, ct, cd)).backward()
        scaler.unscale_(main)
        scaler.unscale_(dom)
        grads = grads_of(model)
        before = model.trunk.weight.detach().clone()
        scale = scaler.get_scale()
        scaler.step(main)
        scaler.step(dom)
        scaler.update()
        record.append({"grads": grads, "before": before, "after": model.trunk.weight.detach().clone(),
                       "scale": (scale, scaler.get_scale())})
    return record


@check("amp.grad_scaler", concern="training tricks")
def amp_grad_scaler(impl):
    """A GradScaler step under autocast: gradients right, a domain-loss overflow skips the trunk's step."""
    device, dtype = ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.bfloat16)
    where = f"GradScaler({device}) with autocast({dtype_name(dtype)})"
    want = _scaler_run(ReferenceGRL(CONTEXT_ALPHA), device, dtype)
    layer = impl.api.layer(alpha=1.0)
    layer.set_alpha(CONTEXT_ALPHA)
    with at(where):
        got = _scaler_run(layer, device, dtype)
    judge_grads(got[0]["grads"], want[0]["grads"], where=f"{where}, step 0 (finite)", bitwise=True)
    if not weights_moved(got[0]["before"], got[0]["after"]):
        raise Failed(f"{where}, step 0: the trunk did not step although every gradient was finite",
                     summary="step skipped")
    g = got[1]["grads"]["trunk.weight"]
    if torch.isfinite(g).all():
        raise Failed(f"{where}, step 1: the domain loss overflowed (inf upstream of the GRL) but the "
                     "trunk's gradient is finite: the GRL swallowed the inf, so the trunk's "
                     "optimizer steps on a gradient the scaler would have discarded",
                     summary="overflow swallowed")
    if weights_moved(got[1]["before"], got[1]["after"]):
        raise Failed(f"{where}, step 1: the trunk stepped on an overflowed step", summary="bad step")
    s0, s1 = got[1]["scale"]
    if not s1 < s0:
        raise Failed(f"{where}, step 1: the scale did not back off ({s0:g} -> {s1:g})",
                     summary="scale kept")
    return passed(f"{where}, two optimizers (trunk+task, domain head): step 0 unscaled gradients "
                  f"bitwise equal to the trusted reference (alpha {CONTEXT_ALPHA}); step 1's domain-loss "
                  f"overflow reaches the trunk as non-finite, both steps skipped, scale {s0:g} -> {s1:g}")
