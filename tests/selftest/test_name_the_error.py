"""The judge names what is wrong with a gradient in a DANN user's words, and a precision loss is
never read as a lost reversal (nor the other way round)."""
from __future__ import annotations

import pytest
import torch

from grl_conformance.checks.kit.judge import name_the_error

G = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
A = 0.1


@pytest.mark.parametrize(("got", "named"), [
    (G.clone(), "reversal lost"),
    (A * G, "wrong sign"),
    (torch.zeros_like(G), "zero gradient"),
    (-torch.tensor(A, dtype=torch.float32).double() * G, "alpha rounded to float32"),
    ((-A * G).float().double(), "grad rounded to float32"),
    ((-A * G).bfloat16().double(), "grad rounded to bfloat16"),
    (-2 * A * G, "wrong scale (x2)"),
    (-A * G + torch.linspace(-1, 1, 64, dtype=torch.float64), "wrong gradient"),
], ids=["lost", "sign", "zero", "alpha32", "grad32", "gradbf16", "scale", "other"])
def test_each_kind_of_wrong_gradient_is_named(got, named):
    assert name_the_error(got, G, A, torch.float64) == named


def test_float32_rounding_is_right_for_a_float32_gradient():
    """Rounding to float32 names a loss only where the gradient is wider than float32."""
    got = (-A * G).float()
    assert name_the_error(got, G.float(), A, torch.float32) != "grad rounded to float32"
