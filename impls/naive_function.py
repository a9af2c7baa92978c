"""The textbook `torch.autograd.Function` GRL, as commonly written (flaws kept on purpose).

It saves its input and a tensor lambda for backward (activation memory held for nothing),
builds lambda as a float32 tensor (a float64 input gets a float32-rounded alpha), and uses
the old-style `forward(ctx, ...)` without `setup_context` (no torch.func support).
"""
import torch
from torch import nn
from torch.autograd import Function

from grl_conformance.core.registry import Impl, seed_api


class GradientReversalFunction(Function):
    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.save_for_backward(x, lambda_)
        return x

    @staticmethod
    def backward(ctx, grad_output):
        _, lambda_ = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = -lambda_ * grad_output
        return grad_input, None


class GradientReversalLayer(nn.Module):
    def __init__(self, alpha=1.0):
        super().__init__()
        self.lambda_param = torch.tensor(alpha, requires_grad=False)

    def set_alpha(self, alpha):
        self.lambda_param = torch.tensor(alpha, requires_grad=False)

    def forward(self, x):
        return GradientReversalFunction.apply(x, self.lambda_param)


def gradient_reversal(x, alpha=1.0):
    return GradientReversalFunction.apply(x, torch.tensor(alpha, requires_grad=False))


IMPL = Impl(name="naive_function", kind="function", load=seed_api(__name__), reference=True)
