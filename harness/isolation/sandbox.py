"""Every cell in a sandbox: one long-lived child process per implementation row.

The harness runs other people's code, so no implementation runs in the pytest process and no
two implementations share a process. A `Sandbox` (one per pytest process: the controller, or
each xdist worker) keeps a child per row, forked from the session's forkserver
(harness/core/procs.py, started with isolation/server.py's PRELOAD) that already imported
torch, and sends it one cell at a time:

- a cell that takes longer than the timeout (`--grl-timeout`, GRL_TIMEOUT) gets its Python
  stack dumped (faulthandler on SIGUSR1), then the child's process group is killed; the cell is
  `error` ("timed out after N s", where it was stuck) and a fresh child takes the row's next cell;
- a child that dies (a signal, `os._exit`, an abort in C++) makes the cell `error` naming the
  signal or exit code with the last lines it wrote (its stdout and stderr go through a pipe to
  a thread here that keeps only the last TAIL_BYTES: a chatty row cannot fill a disk, and a run
  writes no files; `--grl-keep-logs DIR` saves each row's tail there when the row ends);
- global state a cell changes (grad mode, default dtype and device, deterministic flags,
  anomaly mode, thread count, dynamo config, the hypothesis profile) is restored after it and
  named in the cell; a non-daemon thread left running is named too. A row's state can never
  reach another row: each has its own process.

A check declared with `own_processes` (the distributed ones) only launches and judges ranks of
its own, with their own timeout and cleanup, so it runs in the calling process.

The child exits with `os._exit`, so no thread an implementation leaves behind can hold it; it
also exits when the process that owns it is gone. Whatever the row's code started ends with the
row, in a session of its own or not: the child is a subreaper, its tree is frozen and killed,
and every process carrying its environment mark is killed too (core/procs.py, `end_children`).
No process outlives the session.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection, wait

from grl_conformance.core.outcome import ERROR, PASS, Outcome, one_line
from grl_conformance.core.procs import (
    descendants,
    dump_stacks,
    end_children,
    enter_child,
    exit_reason,
    frames_outside_torch,
    group_members,
    kill_group,
    marked,
    new_mark,
    signal_pid,
)
from grl_conformance.isolation import server

TAIL_BYTES = 256 * 1024  # of each row's output, kept for the footnotes (and --grl-keep-logs)
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

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, keep_logs: str | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.keep_logs = keep_logs  # a directory for each row's output tail, or None: no files
        self.survivors: list[int] = []  # processes a row left that could not be killed
        self.rows: dict[str, RowChild] = {}
        self.started: list[int] = []  # pids of every child started (self-tests check they end)
        self._serial = 0
        server.register()  # a distributed cell forks its ranks from the rows' preloaded server

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
            row = self.rows[impl.ref] = RowChild(impl.ref, f"{self._serial:03d}-{_safe(impl.name)}")
            self.started.append(row.pid)
        outcome = row.run(check.id, self.timeout_s)
        if not row.alive():
            self._end(row)
            del self.rows[impl.ref]
        return outcome

    def _end(self, row: RowChild) -> None:
        try:
            row.close()
        except Exception:  # noqa: BLE001 - the group kill below still ends it
            kill_group(row.pid)
        self.survivors += row.survivors
        if self.keep_logs:
            row.output.save(os.path.join(self.keep_logs, f"{row.label}.log"))

    def close(self) -> None:
        """End every child; whatever one of them does, the others are still ended."""
        for row in list(self.rows.values()):
            self._end(row)
        self.rows.clear()
        for pid in group_members(self.started):  # anything the kills above missed
            signal_pid(signal.SIGKILL, pid)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:40]


class RowChild:
    """One implementation's child: cells go in one at a time, outcomes come back."""

    def __init__(self, ref: str, label: str) -> None:
        ctx = server.context()
        self.ref, self.label, self.mark = ref, label, new_mark("row")
        self.conn, child_conn = ctx.Pipe()
        read_fd, write_fd = os.pipe()
        self.output = OutputTail(read_fd)
        out = Connection(write_fd, readable=False)  # its fd travels to the child with the args
        self.proc = ctx.Process(target=_serve_row,
                                args=(child_conn, out, ref, self.mark, os.getpid()),
                                name=f"grl-row {ref}", daemon=False)
        try:
            self.proc.start()
        finally:
            child_conn.close()
            out.close()  # the child holds the write end now: EOF once it and its own are gone
        self.pid = self.proc.pid
        self.closed = False
        self.survivors: list[int] = []

    def alive(self) -> bool:
        return not self.closed and self.proc.exitcode is None

    def run(self, check_id: str, timeout_s: float) -> Outcome:
        start = time.perf_counter()
        offset = self.output.offset()
        try:
            self.conn.send(check_id)
        except OSError:
            return self._died(offset, start)
        ready = wait([self.conn, self.proc.sentinel], timeout=timeout_s)
        if self.conn in ready:
            try:
                return Outcome.from_dict(self.conn.recv())
            except (EOFError, OSError):
                pass
        if not ready:
            return self._timed_out(offset, start, timeout_s)
        return self._died(offset, start)

    def _timed_out(self, offset: int, start: float, timeout_s: float) -> Outcome:
        dump_stacks([self.pid], lambda: _SERVE in self.output.since(offset))
        self.output.settle()
        self.close(graceful=False)
        where = frames_outside_torch(self.output.since(offset), _SERVE, skip=_HERE)
        return Outcome(ERROR, one_line(f"timed out after {timeout_s:g} s (--grl-timeout); the row's "
                                       f"process was killed" + (f"; stuck at {where}" if where else "")),
                       round(time.perf_counter() - start, 4), "timeout")

    def _died(self, offset: int, start: float) -> Outcome:
        self.proc.join(timeout=5)
        reason = exit_reason(self.proc.exitcode)
        self.close()
        self.output.settle()
        text = self.output.since(offset)
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
                self.conn.send(None)  # the child ends what it started, then exits
            except OSError:
                pass
            self.proc.join(timeout=2)
        # Whatever is left: the child's tree while it is unreaped, its group (setsid made it the
        # leader), and every process carrying its mark (a new session, an orphan of a dead child).
        self.survivors = end_children([self.proc], self.mark)
        self.conn.close()
        if self.proc.exitcode is not None:
            self.proc.close()  # its sentinel fd now, not at garbage collection


# Lines of a faulthandler dump: the stack is summarised in `where`, not repeated.
_DUMP_LINES = ("  File", "Thread 0x", "Current thread", "Extension modules:", "  <no Python frame>")


class OutputTail:
    """A row child's stdout and stderr, read from a pipe by a thread; the last `limit` bytes kept."""

    def __init__(self, fd: int, limit: int = TAIL_BYTES) -> None:
        self.limit, self.total, self.last = limit, 0, time.monotonic()
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.eof = threading.Event()
        threading.Thread(target=self._read, args=(fd,), name="grl-row-output", daemon=True).start()

    def _read(self, fd: int) -> None:
        try:
            while chunk := os.read(fd, 1 << 16):
                with self.lock:
                    self.buf += chunk
                    self.total += len(chunk)
                    if len(self.buf) > self.limit:
                        del self.buf[:len(self.buf) - self.limit]
                    self.last = time.monotonic()
        except OSError:
            pass
        finally:
            os.close(fd)
            self.eof.set()

    def offset(self) -> int:
        """Bytes read so far: pass it to `since` for what was written after this point."""
        return self.total

    def since(self, offset: int, limit: int = 20000) -> str:
        with self.lock:
            kept = min(len(self.buf), self.total - offset)
            data = bytes(self.buf[len(self.buf) - kept:]) if kept > 0 else b""
        return data[-limit:].decode(errors="replace")

    def settle(self, quiet_s: float = 0.2, wait_s: float = 3.0) -> None:
        """Wait for EOF or `quiet_s` without output, so a dead child's last words are read."""
        deadline = time.monotonic() + wait_s
        while not self.eof.is_set() and time.monotonic() < deadline:
            if time.monotonic() - self.last > quiet_s:
                return
            self.eof.wait(0.05)

    def save(self, path: str) -> None:
        self.settle()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with self.lock, open(path, "wb") as fh:
            fh.write(self.buf)


# --- the child ------------------------------------------------------------------------------

def _serve_row(conn, out, ref: str, mark: str, owner_pid: int) -> None:
    """The row's child: load the entry once, then run the cells it is sent until told to stop."""
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    out.close()
    log = open(1, "w", buffering=1, errors="replace", closefd=False)  # noqa: SIM115
    sys.stdout = sys.stderr = log
    enter_child(mark, log, owner_pid)  # a segfault's or a timeout's stack lands in the log
    try:
        status = _serve(conn, ref)
    except BaseException as exc:  # noqa: BLE001 - report it in the log, then leave
        print(f"grl sandbox: {type(exc).__name__}: {exc}", file=log)
        status = 1
    log.flush()
    _end_descendants(mark)
    os._exit(status)  # no thread an implementation left behind may keep this process alive


def _end_descendants(mark: str) -> None:
    """Kill what the row's code started (its tree: this process is their subreaper; and any
    process with this row's mark) before the child exits."""
    me = os.getpid()
    for pid in (descendants(me) | set(marked(mark))) - {me}:
        signal_pid(signal.SIGKILL, pid)  # no thread an implementation left behind may keep this process alive


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
        conn.send(outcome.to_dict())


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
                       "leaks state", outcome.warnings)
    return Outcome(outcome.status, one_line(f"{outcome.detail}; {note}"), outcome.duration_s,
                   outcome.summary, outcome.warnings)


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
