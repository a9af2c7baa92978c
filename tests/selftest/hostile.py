"""Hostile implementations: each breaks the process it runs in, not only its own gradient.

The sandbox must turn each into red cells with a useful detail while every other row keeps
exactly its cells (tests/selftest/test_sandbox.py). Rows are named for what they do.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time

import torch

from grl_conformance.core.reference import Reverse
from grl_conformance.core.registry import GRL, Impl
from tests.selftest.grls import FloatAlphaLayer


def hostile(name: str, layer: type) -> Impl:
    api = GRL(layer, lambda x, alpha=1.0: layer(alpha=alpha)(x))
    return Impl(name=name, kind="external", load=lambda: api, origin="tests/selftest/hostile.py")


def _with_backward(action) -> type:
    """A view-forward Function whose backward runs `action` (which never returns normally)."""

    class BadBackward(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.view_as(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            action()
            return grad

    return BadBackward


def _hang() -> None:
    while True:
        time.sleep(0.1)


_SegfaultInBackward = _with_backward(lambda: ctypes.string_at(0))  # reads address 0: SIGSEGV
_HangInBackward = _with_backward(_hang)


class SegfaultLayer(FloatAlphaLayer):
    def forward(self, x):
        return _SegfaultInBackward.apply(x)


class ExitLayer(FloatAlphaLayer):
    def forward(self, x):
        os._exit(7)


class HangLayer(FloatAlphaLayer):
    def forward(self, x):
        return _HangInBackward.apply(x)


class GradOffLayer(FloatAlphaLayer):
    """A one-line bug: grad mode switched off for good after the forward."""

    def forward(self, x):
        out = Reverse.apply(x, self.alpha)
        torch.set_grad_enabled(False)
        return out


class DefaultDtypeLayer(FloatAlphaLayer):
    def forward(self, x):
        torch.set_default_dtype(torch.float64)
        return Reverse.apply(x, self.alpha)


class ThreadLayer(FloatAlphaLayer):
    """Starts a non-daemon thread that never ends (a process holding it cannot exit normally)."""

    def forward(self, x):
        threading.Thread(target=lambda: time.sleep(10**6), name="grl-forever").start()
        return Reverse.apply(x, self.alpha)


class SpawnerLayer(FloatAlphaLayer):
    """A correct GRL that starts a sleeping helper in a session of its own per construction."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)
        import subprocess

        subprocess.Popen(["sh", "-c", "sleep 600; : grl-selftest-helper"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def forward(self, x):
        return Reverse.apply(x, self.alpha)


CHATTY_BYTES = 1 << 20


class ChattyLayer(FloatAlphaLayer):
    """A correct GRL that prints a megabyte per forward (a debugging print left in)."""

    def forward(self, x):
        os.write(1, b"x" * (CHATTY_BYTES - 1) + b"\n")
        return Reverse.apply(x, self.alpha)


SEGFAULT = hostile("hostile_segfault", SegfaultLayer)
EXIT = hostile("hostile_exit", ExitLayer)
HANG = hostile("hostile_hang", HangLayer)
GRAD_OFF = hostile("hostile_grad_off", GradOffLayer)
DEFAULT_DTYPE = hostile("hostile_dtype", DefaultDtypeLayer)
THREAD = hostile("hostile_thread", ThreadLayer)
SPAWNER = hostile("hostile_spawner", SpawnerLayer)
CHATTY = hostile("hostile_chatty", ChattyLayer)
