"""What a check is: one record per column, made by its registration (`@check` in
`grl_conformance.checks`), read by everything that groups or orders columns.

The record says the column's id (part of the report format), its area (the module that holds
it: the report's column groups and `grl-harness run --area`), its concern (the column of the
README's "Which GRL should I use?" table it answers), its control (core/controls.py) and how it
runs. Nothing here imports torch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The concerns of a DANN user, in the advice table's order: (name, when it matters).
CONCERNS = (
    ("eager", "any training: right forward and -alpha * grad, alpha updates, several GRLs"),
    ("memory", "large activations: nothing saved for backward, each step's graph freed"),
    ("compile", "torch.compile with the DANN alpha schedule, and the op registration it relies on"),
    ("deploy", "shipping the model: torch.export, TorchScript, ONNX, FX feature extraction"),
    ("distributed", "DDP, compiled DDP, FSDP2, DTensor"),
    ("training tricks", "AMP, activation checkpointing, EMA copies and checkpoints"),
    ("torch.func", "vmap / grad / jvp (meta-learning, per-sample gradients)"),
    ("CUDA graphs", "capture with reduce-overhead or CUDA graphs"),
    ("DANN", "a DANN trained through it adapts (two moons)"),
)
CONCERN_NAMES = tuple(name for name, _ in CONCERNS)


@dataclass(frozen=True)
class Check:
    id: str
    area: str
    fn: Callable
    doc: str
    concern: str
    runs_backward: bool = True  # whether a GRL that never reverses must fail it
    # The check runs the implementation only in processes of its own (distributed ranks): the
    # harness calls it directly instead of sending it to the row's sandboxed child.
    own_processes: bool = False
    # The column's positive control (core/controls.py): the trusted reference GRL, or a built-in
    # row by name where the column needs more than the reference offers.
    control: str = "reference"

    def __post_init__(self) -> None:
        if self.concern not in CONCERN_NAMES:
            raise ValueError(f"check {self.id!r}: unknown concern {self.concern!r}; one of "
                             f"{', '.join(CONCERN_NAMES)}")
