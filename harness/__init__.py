"""grl-conformance: a conformance harness for PyTorch gradient reversal layers.

Flow is one-way: registry -> checks -> outcomes -> report.
"""
import os

# torch 2.13 turns a custom op whose output aliases its input from a warning into an error
# when the environment variable CI is set (torch._functorch.config.error_on_custom_op_aliasing
# defaults to bool($CI)). The matrix must say what users get, not what a CI runner gets, and
# must not change with the machine it runs on: pin the user default before torch is imported
# (child processes inherit it). Set the variable yourself to see the strict behaviour.
os.environ.setdefault("TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING", "0")
