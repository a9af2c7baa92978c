"""Other things in the graph around a GRL (docs/checks.md, 'Eager'): several GRLs in one graph
(one per discriminator), an in-place op right after the layer."""
from __future__ import annotations

import re

import torch

from grl_conformance.checks import check
from grl_conformance.checks.kit.forms import form, forms
from grl_conformance.checks.kit.inputs import randn
from grl_conformance.checks.kit.judge import at, close, two_reversals
from grl_conformance.core.outcome import Failed, Outcome, expect, passed

CONCERN = "eager"  # the advice table's column for this area's checks (core/check.py)


def _two_branch_grad(f1, f2, x0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    x = x0.detach().clone().requires_grad_(True)
    ((f1(x) * c1).sum() + (f2(x) * c2).sum()).backward()
    return x.grad


@check("graph.several_grls")
def graph_several_grls(impl) -> Outcome:
    """Two GRLs with different alphas in one graph (one per discriminator, as multi-adversarial
    and CDAN-style models do), then the same from several threads at once: each branch must get
    its own -alpha (alpha kept in class or module state mixes them up)."""
    import threading

    a1, a2 = 0.3, 1.7
    x0 = randn(8, 16, seed=31)
    c1, c2 = randn(8, 16, seed=32), randn(8, 16, seed=33)
    m1, m2 = impl.api.layer(alpha=a1), impl.api.layer(alpha=a2)
    pairs = [("two modules", m1, m2),
             ("two functional calls", form(impl, "fn", a1), form(impl, "fn", a2))]
    for label, f1, f2 in pairs:
        got = _two_branch_grad(f1, f2, x0, c1, c2)
        if not two_reversals(got, a1, a2, c1, c2):
            mixed = two_reversals(got, a2, a2, c1, c2) or two_reversals(got, a1, a1, c1, c2)
            raise Failed(f"{label} with alphas {a1} and {a2} in one graph: the input gradient is not "
                         f"-{a1} * upstream1 - {a2} * upstream2"
                         + ("; both branches got the same alpha (alpha kept in shared state)" if mixed
                            else ""), summary="alphas mixed" if mixed else "wrong grad")
    # Threads: each with its own pair of instances and alphas, and all sharing one instance.
    errors: list[str] = []
    shared = impl.api.layer(alpha=a1)

    def worker(k: int) -> None:
        try:
            b1, b2 = 0.1 * (k + 1), 0.5 + 0.25 * k
            own1, own2 = impl.api.layer(alpha=b1), impl.api.layer(alpha=b2)
            for _ in range(25):
                got = _two_branch_grad(own1, own2, x0, c1, c2)
                if not two_reversals(got, b1, b2, c1, c2):
                    errors.append(f"thread {k}: its own instances (alphas {b1:g}, {b2:g}) gave a "
                                  "wrong input gradient")
                    return
                got = _two_branch_grad(shared, shared, x0, c1, c2)
                if not two_reversals(got, a1, a1, c1, c2):
                    errors.append(f"thread {k}: the shared instance (alpha {a1}) gave a wrong "
                                  "input gradient")
                    return
        except Exception as exc:  # noqa: BLE001 - reported as the cell's failure
            errors.append(f"thread {k}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Failed(f"4 threads, each with its own two instances and all sharing one: {errors[0]}",
                     summary="threads mixed")
    return passed(f"alphas {a1} and {a2} in one graph (modules and functional calls), and 4 threads "
                  "x 25 steps with their own instances and a shared one: every branch got its own "
                  "-alpha")


# --- inplace.after --------------------------------------------------------------------------

# autograd's own refusals of an in-place op (view of a custom Function or multi-output view op,
# saved tensor modified, leaf view); anything else raised is the implementation's error
_CLEAR = re.compile(r"is being modified inplace|modified by an inplace operation|"
                    r"used in an in-place operation", re.IGNORECASE)


@check("inplace.after", control="composite")
def inplace_after(impl):
    """relu_ right after the layer: the gradient must stay right, or autograd must refuse loudly.

    Its control is the composite GRL, which returns a new tensor: the reference returns a view,
    raises at relu_ and so would pass the column without ever running a backward."""
    a = 0.5
    x0 = torch.tensor([1.0, -2.0, 3.0, -0.5, 0.25, -4.0], dtype=torch.float64)
    c = randn(6, seed=14)
    want = 2 * -a * c * (x0 > 0)
    results = []
    for label, f in forms(impl, a):
        leaf = x0.clone().requires_grad_(True)
        x = leaf * 2  # a non-leaf activation, as inside a network
        with at(label, summary=""):
            try:
                y = f(x)
                y.relu_()
                (y * c).sum().backward()
            except RuntimeError as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                if not _CLEAR.search(message):
                    raise
                results.append(f"{label} raises a clear error ({message[:150]})")
                continue
            expect(close(y.detach(), torch.relu(x0 * 2), "structure"),
                   f"{label}: relu_ after the layer gave wrong values")
            if not close(leaf.grad, want, "structure"):
                got = "None" if leaf.grad is None else str([round(v, 4) for v in leaf.grad.tolist()])
                why = " (reversal silently lost)" if close(leaf.grad, -want / a, "structure") else ""
                raise Failed(f"{label}: wrong gradient after relu_{why}: {got}, expected "
                             f"{[round(v, 4) for v in want.tolist()]}", summary="silent wrong grad")
            results.append(f"{label} correct gradient")
    raised = [r for r in results if " raises " in r]
    if len(raised) == len(results) == 2 and raised[0].split(" ", 1)[1] == raised[1].split(" ", 1)[1]:
        results = [f"layer and fn {raised[0].split(' ', 1)[1].replace('raises', 'raise', 1)}"]
    return passed("; ".join(results) + " (both acceptable; a silent wrong gradient is not)",
                  summary="raises" if len(raised) == 2 else "")

