"""Every cell in a sandbox: one long-lived child process per implementation row.

The harness runs other people's code, so no implementation runs in the pytest process and no
two implementations share a process. A `Sandbox` (one per pytest process: the controller, or
each xdist worker) keeps a child per row, forked from the session's forkserver
(harness/isolation/procs.py) that already imported torch, and sends it one cell at a time:

- a cell that takes longer than the timeout (`--grl-timeout`, GRL_TIMEOUT) gets its Python
  stack dumped (faulthandler on SIGUSR1), then the child's process group is killed; the cell is
  `error` ("timed out after N s", where it was stuck) and a fresh child takes the row's next cell;
- a child that dies (a signal, `os._exit`, an abort in C++) makes the cell `error` naming the
  signal or exit code with the last lines it wrote (stdout and stderr go to a log file);
- global state a cell changes (grad mode, default dtype and device, deterministic flags,
  anomaly mode, thread count, dynamo config, the hypothesis profile) is restored after it and
  named in the cell; a non-daemon thread left running is named too. A row's state can never
  reach another row: each has its own process.

A check declared with `own_processes` (the distributed ones) only launches and judges ranks of
its own, with their own timeout and cleanup, so it runs in the calling process.

The child exits with `os._exit`, so no thread an implementation leaves behind can hold it; it
also exits when the process that owns it is gone. No process outlives the session.
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import wait

from grl_conformance.core.outcome import ERROR, PASS, Outcome, one_line
from grl_conformance.isolation.procs import (
    ensure_forkserver,
    exit_reason,
    frames_outside_torch,
    group_members,
    kill_group,
    signal_pid,
)

DEFAULT_TIMEOUT_S = 300.0  # a cold inductor compile on 2 busy cores takes well under a minute
_SERVE = "_serve_row"  # the child's main function, found in faulthandler dumps by this name
_HERE = os.path.abspath(__file__)  # this file's frames are left out of "stuck at" stacks


def timeout_from_env(default: float = DEFAULT_TIMEOUT_S) -> float:
    value = os.environ.get("GRL_TIMEOUT", "")
    try:
        return float(value) if value else default
    except ValueError:
        raise ValueError(f"GRL_TIMEOUT={value!r}: expected a number of seconds") from None


class Sandbox:
    """The rows' children of one pytest process; `close()` ends them all."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.tmp = tempfile.mkdtemp(prefix="grl-sandbox-")
        self.rows: dict[str, RowChild] = {}
        self.started: list[int] = []  # pids of every child started (self-tests check they end)
        self._serial = 0

    def run(self, impl, check) -> Outcome:
        """Run one cell of `impl` (a registry entry with a `ref`) through `check`."""
        if check.own_processes:
            from grl_conformance.core.runner import run_check

            return run_check(impl, check)
        if not impl.ref:
            return Outcome(ERROR, f"{impl.name}: entry has no ref, a child process cannot load it")
        row = self.rows.get(impl.ref)
        if row is None or not row.alive():
            self._serial += 1
            log = os.path.join(self.tmp, f"{self._serial:03d}-{_safe(impl.name)}.log")
            row = self.rows[impl.ref] = RowChild(impl.ref, log)
            self.started.append(row.pid)
        outcome = row.run(check.id, self.timeout_s)
        if not row.alive():
            row.close()
            del self.rows[impl.ref]
        return outcome

    def close(self) -> None:
        """End every child; whatever one of them does, the others are still ended."""
        for row in list(self.rows.values()):
            try:
                row.close()
            except Exception:  # noqa: BLE001 - the group kill below still ends it
                kill_group(row.pid)
        self.rows.clear()
        for pid in group_members(self.started):  # anything the kills above missed
            signal_pid(signal.SIGKILL, pid)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:40]


class RowChild:
    """One implementation's child: cells go in one at a time, outcomes come back."""

    def __init__(self, ref: str, log_path: str) -> None:
        ctx = ensure_forkserver()
        self.ref, self.log_path = ref, log_path
        open(log_path, "a").close()
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_row, args=(child_conn, ref, log_path, os.getpid()),
                                name=f"grl-row {ref}", daemon=False)
        self.proc.start()
        child_conn.close()
        self.pid = self.proc.pid
        self.closed = False

    def alive(self) -> bool:
        return not self.closed and self.proc.exitcode is None

    def run(self, check_id: str, timeout_s: float) -> Outcome:
        start = time.perf_counter()
        offset = _size(self.log_path)
        try:
            self.conn.send(check_id)
        except OSError:
            return self._died(offset, start)
        ready = wait([self.conn, self.proc.sentinel], timeout=timeout_s)
        if self.conn in ready:
            try:
                return Outcome(**self.conn.recv())
            except (EOFError, OSError):
                pass
        if not ready:
            return self._timed_out(offset, start, timeout_s)
        return self._died(offset, start)

    def _timed_out(self, offset: int, start: float, timeout_s: float) -> Outcome:
        signal_pid(signal.SIGUSR1, self.pid)  # faulthandler writes every thread's stack
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and _SERVE not in _tail_text(self.log_path, offset):
            time.sleep(0.05)
        time.sleep(0.1)  # let the handler finish writing
        self.close(graceful=False)
        where = frames_outside_torch(_tail_text(self.log_path, offset), _SERVE, skip=_HERE)
        return Outcome(ERROR, one_line(f"timed out after {timeout_s:g} s (--grl-timeout); the row's "
                                       f"process was killed" + (f"; stuck at {where}" if where else "")),
                       round(time.perf_counter() - start, 4), "timeout")

    def _died(self, offset: int, start: float) -> Outcome:
        self.proc.join(timeout=5)
        reason = exit_reason(self.proc.exitcode)
        self.close()
        text = _tail_text(self.log_path, offset)
        where = (frames_outside_torch(text, "Current thread", skip=_HERE)
                 or frames_outside_torch(text, _SERVE, skip=_HERE))
        lines = [ln.strip() for ln in text.splitlines()
                 if ln.strip() and not ln.startswith(_DUMP_LINES)]
        said = " | ".join(lines[-4:])
        detail = (f"the row's process died during the cell: {reason}"
                  + (f" at {where}" if where else "") + (f"; it wrote: {said}" if said else ""))
        return Outcome(ERROR, one_line(detail), round(time.perf_counter() - start, 4),
                       reason.replace("killed by ", ""))

    def close(self, graceful: bool = True) -> None:
        """Ask the child to exit, then kill its process group whatever it answered (once)."""
        if self.closed:
            return
        self.closed = True
        if graceful and self.proc.exitcode is None and not self.conn.closed:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=2)
        kill_group(self.pid)  # the child and anything it started (setsid made it the leader)
        if self.proc.exitcode is None:
            signal_pid(signal.SIGKILL, self.pid)
        self.proc.join(timeout=5)
        self.conn.close()
        if self.proc.exitcode is not None:
            self.proc.close()  # its sentinel fd now, not at garbage collection


# Lines of a faulthandler dump: the stack is summarised in `where`, not repeated.
_DUMP_LINES = ("  File", "Thread 0x", "Current thread", "Extension modules:", "  <no Python frame>")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tail_text(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()[-20000:].decode(errors="replace")
    except OSError:
        return ""


# --- the child ------------------------------------------------------------------------------

def _serve_row(conn, ref: str, log_path: str, owner_pid: int) -> None:
    """The row's child: load the entry once, then run the cells it is sent until told to stop."""
    os.setsid()  # its own process group: a kill takes everything it started
    log = open(log_path, "a", buffering=1, errors="replace")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    import faulthandler

    faulthandler.enable(file=log, all_threads=True)  # a segfault's stack lands in the log
    faulthandler.register(signal.SIGUSR1, file=log, all_threads=True)
    threading.Thread(target=_exit_with_owner, args=(owner_pid,), daemon=True).start()
    try:
        status = _serve(conn, ref)
    except BaseException as exc:  # noqa: BLE001 - report it in the log, then leave
        print(f"grl sandbox: {type(exc).__name__}: {exc}", file=log)
        status = 1
    log.flush()
    os._exit(status)  # no thread an implementation left behind may keep this process alive


def _serve(conn, ref: str) -> int:
    from grl_conformance import checks as catalogue
    from grl_conformance.core import hypothesis_profiles, registry
    from grl_conformance.core.runner import run_check

    hypothesis_profiles.load()
    _quiet_compile_workers()
    try:
        impl = registry.resolve(ref)
    except Exception as exc:  # noqa: BLE001 - a row that cannot load: every cell says why
        impl = None
        reason = f"{type(exc).__name__}: {exc}"
    while True:
        try:
            check_id = conn.recv()
        except (EOFError, OSError):
            return 0
        if check_id is None:
            return 0
        if impl is None:
            outcome = Outcome(ERROR, one_line(f"could not load {ref}: {reason}"))
        else:
            state = GlobalState.capture()
            outcome = run_check(impl, catalogue.get(check_id))
            changed = state.restore()
            if changed:
                outcome = _with_leak(outcome, changed)
        conn.send(asdict(outcome))


def _exit_with_owner(owner_pid: int) -> None:
    """End this child when the process that owns it is gone (killed pytest, crashed worker)."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(owner_pid, 0)
        except ProcessLookupError:
            os.killpg(0, signal.SIGKILL)  # this child and everything it started (its group)
        except PermissionError:
            pass


def _quiet_compile_workers() -> None:
    """Compile in-process: a pool of compile workers per row would cost each row seconds."""
    try:
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = 1
    except Exception:  # noqa: BLE001 - no inductor: nothing to tune
        pass


def _with_leak(outcome: Outcome, changed: list[str]) -> Outcome:
    note = "left global state changed: " + "; ".join(changed)
    if outcome.status == PASS:
        return Outcome(ERROR, one_line(f"{note}. {outcome.detail}"), outcome.duration_s,
                       "leaks state")
    return Outcome(outcome.status, one_line(f"{outcome.detail}; {note}"), outcome.duration_s,
                   outcome.summary)


class GlobalState:
    """Process-wide settings a GRL can change by mistake, captured before a cell."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.threads: set = set()

    @classmethod
    def capture(cls) -> GlobalState:
        state = cls()
        for name, (get, _set) in _SETTINGS.items():
            try:
                state.values[name] = get()
            except Exception:  # noqa: BLE001 - a setting this torch lacks is not watched
                pass
        state.threads = {t.ident for t in threading.enumerate()}
        return state

    def restore(self) -> list[str]:
        """Put every changed setting back; return what had changed, in words."""
        changed = []
        for name, before in self.values.items():
            get, set_ = _SETTINGS[name]
            try:
                now = get()
                if now != before:
                    set_(before)
                    changed.append(f"{name} {_change(before, now)} (restored)")
            except Exception as exc:  # noqa: BLE001 - say so rather than guess
                changed.append(f"{name} could not be restored ({type(exc).__name__})")
        left = [t for t in threading.enumerate()
                if t.ident not in self.threads and t.is_alive() and not t.daemon]
        if left:
            from collections import Counter

            names = ", ".join(f"{n} x{c}" if c > 1 else n
                              for n, c in sorted(Counter(t.name for t in left).items()))
            changed.append(f"{len(left)} non-daemon thread(s) still running ({names}): a process "
                           "with them cannot exit")
        return changed


def _change(before, now) -> str:
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        return ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in keys[:3])
    return f"{before} -> {now}"


def _dynamo_config_get() -> dict:
    import torch._dynamo.config as cfg

    return cfg.get_config_copy()


def _dynamo_config_set(saved: dict) -> None:
    import torch._dynamo.config as cfg

    cfg.load_config(saved)


def _torch():
    import torch

    return torch


def _hypothesis_profile_get() -> str:
    from hypothesis import settings

    return settings._current_profile  # noqa: SLF001 - the only way to read the active profile


def _hypothesis_profile_set(name: str) -> None:
    from hypothesis import settings

    settings.load_profile(name)


_SETTINGS = {
    "grad mode": (lambda: _torch().is_grad_enabled(), lambda v: _torch().set_grad_enabled(v)),
    "default dtype": (lambda: _torch().get_default_dtype(), lambda v: _torch().set_default_dtype(v)),
    "default device": (lambda: str(_torch().get_default_device()),
                       lambda v: _torch().set_default_device(None if v == "cpu" else v)),
    "deterministic algorithms": (
        lambda: (_torch().are_deterministic_algorithms_enabled(),
                 _torch().is_deterministic_algorithms_warn_only_enabled()),
        lambda v: _torch().use_deterministic_algorithms(v[0], warn_only=v[1])),
    "anomaly mode": (lambda: _torch().is_anomaly_enabled(),
                     lambda v: _torch().autograd.set_detect_anomaly(v)),
    "torch threads": (lambda: _torch().get_num_threads(), lambda v: _torch().set_num_threads(v)),
    "dynamo config": (_dynamo_config_get, _dynamo_config_set),
    "hypothesis profile": (_hypothesis_profile_get, _hypothesis_profile_set),
}
