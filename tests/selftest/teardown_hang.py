"""A correct GRL whose ranks hang in torch's teardown, for test_distributed_launch.py.

Importing this module in a rank makes `torch.distributed.destroy_process_group` block, as it
did after the work was done on torch 2.6 and 2.7 (gloo): the cell must still be judged on its
verdict, not charged a timeout. Never used outside that test.
"""
from __future__ import annotations

import time

import torch.distributed as dist

from grl_conformance.core.reference import ReferenceGRL as GRL  # noqa: F401 - the row: --grl-impl MODULE:GRL


def _hang() -> None:
    time.sleep(3600)


dist.destroy_process_group = _hang
