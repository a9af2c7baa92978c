"""GRLs for the gate's end-to-end self-test, added to a run with --grl-impl."""
from tests.selftest.grls import FloatAlphaLayer, Reverse


class GateGood(FloatAlphaLayer):
    """A correct GRL: the baseline says it failed, so it is an improvement."""


class GateMutant(GateGood):
    """Forward scales its input: the baseline claims it passed, so it is a planted regression."""

    def forward(self, x):
        return Reverse.apply(x * (1 + 1e-3), self.alpha)


class GateNew(GateGood):
    """A row the baseline does not have: listed as new."""


class GateKnown(GateMutant):
    """Fails, and the baseline says it failed the same way: a known failure (xfail)."""
