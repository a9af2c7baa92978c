"""Imported once by the session's forkserver (harness/procs.py, PRELOAD): work every row's child
would otherwise repeat, done before the fork so the children inherit it.

inductor probes the CPU's vector ISA on its first compile in a process by compiling and running
six small programs (about 0.9 s on 2 cores, measured with cProfile on torch 2.13); the result is
cached per process. Probing here runs only subprocesses and leaves no thread behind.
"""
from __future__ import annotations


def _probe_vector_isa() -> None:
    try:
        from torch._inductor import cpu_vec_isa

        cpu_vec_isa.pick_vec_isa()
    except Exception:  # noqa: BLE001 - a warm-up only: a child that needs it probes again
        pass


_probe_vector_isa()
