"""What torch.compile really did during the probe's compiled run, from dynamo's own records.

A coefficient that is a Python number changing on every call (a warm-start counter's alpha)
makes dynamo recompile on each new value; at `recompile_limit` (8) the frame silently runs
eager from then on. A probe that says "compiled" must say how often it recompiled and whether
it fell back: the graphs come from the backend it compiles through (inductor, counted), the
recompile reasons from dynamo's guard failures, the fallbacks from dynamo's own warning.
"""
from __future__ import annotations

import logging
import re

# A guard on a number literal (`grl.iter_num == 18`, `L['self'].alpha == 0.4621`): the
# recompile was caused by a Python number's new value.
_FLOAT_GUARD = re.compile(r"[\w\]]\s*(==|!=)\s*-?\d+(\.\d+)?(e-?\d+)?\b")
_LOGGER = "torch._dynamo.convert_frame"


class CompileWatch(logging.Handler):
    """Use `backend` as torch.compile's backend inside `with watch:`; then `summary()`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.graphs = 0
        self.limit_hits: list[str] = []
        self.reasons: list[str] = []
        self._before: dict = {}

    def backend(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.graphs += 1
        return compile_fx(gm, example_inputs)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "hit config." in message:
            self.limit_hits.append(message.splitlines()[0])

    def __enter__(self):
        self._before = {code: len(reasons) for code, reasons in _guard_failures().items()}
        logging.getLogger(_LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(_LOGGER).removeHandler(self)
        for code, reasons in _guard_failures().items():
            self.reasons += [str(r) for r in reasons[self._before.get(code, 0):]]

    def summary(self) -> dict:
        """The figures and one line: never 'compiled' for a run where nothing compiled."""
        recompiles = len(self.reasons)
        fell_back = bool(self.limit_hits)
        number = any(_FLOAT_GUARD.search(r) for r in self.reasons)
        if self.graphs == 0:
            line = "ran eager: torch.compile compiled no graph of your losses"
        else:
            line = (f"compiled: {self.graphs} graph{'s' * (self.graphs != 1)}, {recompiles} "
                    f"recompile{'s' * (recompiles != 1)}")
            if fell_back:
                line += ", frames fell back to eager after the recompile limit"
            if number and (fell_back or recompiles > 2):
                line += ("; a coefficient (your GRL's?) is a Python number that changes between "
                         "calls, and every new value recompiles: keep it in a tensor (a buffer "
                         "updated in place) to compile once")
        return {"line": line, "graphs": self.graphs, "recompiles": recompiles,
                "fell_back_to_eager": fell_back, "limit_hits": self.limit_hits[:3],
                "reasons": self.reasons[:5], "label": "compiled" if self.graphs else "compile (ran eager)"}


def _guard_failures() -> dict:
    try:
        from torch._dynamo.utils import guard_failures
    except ImportError:  # another torch: the recompiles are then not counted
        return {}
    return guard_failures
