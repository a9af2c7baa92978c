"""grl-conformance: a conformance harness for PyTorch gradient reversal layers.

Flow is one-way: registry -> checks -> outcomes -> report.
"""
