"""Child processes: one forkserver per session, one life cycle, and proof that none survive.

Every process that runs implementation code (a row's cell server, a distributed rank) is forked
from one server process that imported torch once (`PRELOAD`, which the isolation stage gives):
a fork costs about 20 ms where a fresh interpreter importing torch costs about 3 s on 2 cores.
GRL_DIST_START_METHOD=spawn gives distributed ranks a fresh interpreter instead (the row
servers always fork from the server).

Both kinds live one life, written once here:
- `enter_child` is the child's first act: its own session and process group, a subreaper, dead
  with its owner, its environment mark, and its Python stacks on SIGUSR1 (faulthandler);
- `dump_stacks` asks stuck children for those stacks before they are killed;
- `end_children` freezes and kills each child's tree, its process group and every process
  carrying its mark, then reads /proc to prove nothing is left.
The row child (isolation/sandbox.py) and the distributed launcher (checks/distributed.py) differ
only in what they say about it. This module sits in `core` because both stages use it.
"""
from __future__ import annotations

import os
import signal
import time

# What the server imports before it forks anything, in order. Core names none of these modules:
# the isolation stage owns the list (isolation/server.py) and hands it over before the server
# starts (`use_preload`); names a self-test plants here (tests/selftest/plant_*.py) follow it.
PRELOAD: list[str] = []


def use_preload(names) -> None:
    """Put `names` first in PRELOAD, each once. Read when the server starts: a server already
    running keeps what it imported."""
    PRELOAD[:0] = [n for n in names if n not in PRELOAD]


_STOP_AT_EXIT: list = []


def start_method() -> str:
    """`forkserver` (preloaded, stopped at exit) unless GRL_DIST_START_METHOD says otherwise."""
    import multiprocessing

    method = os.environ.get("GRL_DIST_START_METHOD", "forkserver")
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"
    if method == "forkserver":
        ensure_forkserver()
    return method


def ensure_forkserver():
    """The forkserver context: the server started with PRELOAD, its warm-up proved."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # no effect once the server runs
    _short_listener_dir()
    if not _STOP_AT_EXIT:
        import atexit

        atexit.register(stop_forkserver)
        _STOP_AT_EXIT.append(True)
    if not WARMUP or not _server_running():
        _start_proven(ctx)
    return ctx


# The server's warm-ups (isolation/preload.py), best first. On some torch builds a process that
# ran a backward after compiling can no longer give a forked child a working autograd (the
# 2.14.1 and 2.15.0 CUDA wheels, also without a GPU: "Unable to handle autograd's threading in
# combination with fork-based multiprocessing"), so each warm-up is proved by a child forked
# after it; one that fails it is dropped and the server starts again with the next.
# GRL_WARMUP names the first one to try.
WARMUP_VAR = "GRL_WARMUP"
WARMUPS = {"full": "a compiled forward and backward", "forward": "a compiled forward under no_grad",
           "none": "none (imports only)"}
WARMUP: dict = {}  # this process's server: level, what it did, the warm-ups dropped and why


def warmup_summary() -> str:
    """One line for the run's header: the server's warm-up, and any dropped on this torch."""
    if not WARMUP:
        return ""
    text = f"sandbox warm-up: {WARMUP['did']}"
    for level, why in WARMUP["dropped"]:
        text += f"; {level} dropped: {why}"
    return text


def _server_running() -> bool:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None) is not None


def _start_proven(ctx) -> None:
    from multiprocessing import forkserver

    first = os.environ.get(WARMUP_VAR, "full")
    levels = list(WARMUPS)[list(WARMUPS).index(first):] if first in WARMUPS else list(WARMUPS)
    dropped: list[tuple[str, str]] = []
    for level in levels:
        saved = os.environ.get(WARMUP_VAR)
        os.environ[WARMUP_VAR] = level  # read by the server as it starts, then put back
        try:
            forkserver.ensure_running()
        finally:
            if saved is None:
                del os.environ[WARMUP_VAR]
            else:
                os.environ[WARMUP_VAR] = saved
        ok, said = prove_backward(ctx)
        if ok:
            WARMUP.update(level=level, did=said, dropped=dropped)
            return
        dropped.append((level, said))
        stop_forkserver()
    # Even a server that only imported torch cannot: every cell will say why; the header too.
    forkserver.ensure_running()
    WARMUP.update(level="none", did="none, and a forked child still cannot run a backward",
                  dropped=dropped)


def prove_backward(ctx, timeout_s: float = 60.0) -> tuple[bool, str]:
    """(True, what the server's warm-up did) when a child forked from it runs a backward."""
    parent, child = ctx.Pipe(duplex=False)
    first = PRELOAD[0] if PRELOAD else ""  # the module that says what the warm-up did (DID)
    proc = ctx.Process(target=_backward_in_child, args=(child, first), name="grl-warmup-proof",
                       daemon=True)
    proc.start()
    child.close()
    try:
        if parent.poll(timeout_s):
            return parent.recv()
        return False, f"the proof child gave no answer in {timeout_s:g} s"
    except (EOFError, OSError):
        proc.join(timeout=5)
        return False, f"the proof child died: {exit_reason(proc.exitcode)}"
    finally:
        parent.close()
        if proc.exitcode is None:
            signal_pid(signal.SIGKILL, proc.pid)
        proc.join(timeout=5)


def _backward_in_child(conn, first: str) -> None:
    import sys

    did = getattr(sys.modules.get(first), "DID", "unknown (the preload did not run)")
    try:
        import torch

        x = torch.ones(2, requires_grad=True)
        (x * 2.0).sum().backward()
        ok = x.grad is not None and x.grad.tolist() == [2.0, 2.0]
        conn.send((ok, did if ok else f"after {did}, a forked child's backward gave {x.grad}"))
    except Exception as exc:  # noqa: BLE001 - the very thing this proves
        from grl_conformance.core.outcome import one_line

        text = one_line(f"{type(exc).__name__}: {exc}", limit=200)
        conn.send((False, f"after {did}, a forked child's backward raised {text}"))
    finally:
        conn.close()


# A Unix socket path holds at most 107 bytes; the forkserver listens on
# <multiprocessing temp dir>/listener-XXXXXXXX, whose temp dir is <TMPDIR>/pymp-XXXXXXXX.
_LISTENER_SUFFIX = len("/pymp-XXXXXXXX/listener-XXXXXXXX")


def _short_listener_dir() -> None:
    """Under a long TMPDIR (a CI workspace, a test's tmp_path) the forkserver's listener path
    passes the Unix socket limit and every row fails with `AF_UNIX path too long`. Then
    multiprocessing's temp dir, not yet made, is made under /tmp instead, removed at exit as
    multiprocessing removes its own; with a short TMPDIR nothing changes."""
    import shutil
    import tempfile
    from multiprocessing import process, util

    config = process.current_process()._config
    if config.get("tempdir") is not None or not os.path.isdir("/tmp"):
        return
    if len(tempfile.gettempdir()) + _LISTENER_SUFFIX < 100:
        return
    remove = getattr(util, "_remove_temp_dir", None)
    if remove is None:  # not the multiprocessing this was written against: leave it alone
        return
    short = tempfile.mkdtemp(prefix="pymp-", dir="/tmp")
    util.Finalize(None, remove, args=(shutil.rmtree, short), exitpriority=-100)
    config["tempdir"] = short


def stop_forkserver(grace_s: float = 0.1) -> None:
    """Close the server's pipe, kill the server and reap it, so no server outlives the session.

    The server would exit on its own once every holder of its pipe is gone, but each forked
    child holds a copy (a child that somehow survived would make CPython's own `_stop` wait
    forever), and its interpreter's teardown with torch loaded takes 1.4 s (2 cores) for a
    process that holds nothing to flush: it is a template the children were forked from. So it
    gets `grace_s`, then SIGKILL.
    """
    from multiprocessing import forkserver, util

    server = forkserver._forkserver  # CPython >= 3.8, private
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    try:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
        deadline = time.monotonic() + grace_s
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                signal_pid(signal.SIGKILL, pid)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        address = server._forkserver_address
        if address and not util.is_abstract_socket_namespace(address):
            os.unlink(address)
    except (OSError, AttributeError, TypeError):
        pass  # already gone, or another CPython: it exits on EOF by itself
    server._forkserver_pid = None
    server._forkserver_address = None


def group_members(pgids) -> list[int]:
    """Live (non-zombie) processes whose process group is one of `pgids`, read from /proc."""
    pgids, found = set(pgids), []
    if not os.path.isdir("/proc"):  # not Linux: the group kills stand, unverified
        return found
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else []
        if fields and int(fields[2]) in pgids and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


MARK_VAR = "GRL_CONFORMANCE_RUN"  # set in every process that runs implementation code
_MARKS = iter(range(1, 1 << 62))


def new_mark(kind: str) -> str:
    """A token unique to one row child or one distributed launch of this session."""
    return f"{os.getpid()}-{kind}-{next(_MARKS)}-{os.urandom(4).hex()}"


def marked(token: str) -> list[int]:
    """Live processes whose environment carries MARK_VAR=token: whatever an implementation
    started with `subprocess` inherits it, in a session of its own or not (Linux; elsewhere [])."""
    needle = f"\0{MARK_VAR}={token}\0".encode()
    found: list[int] = []
    if not os.path.isdir("/proc"):
        return found
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if needle in b"\0" + environ + b"\0" and _state(int(entry)) not in ("Z", "X", ""):
            found.append(int(entry))
    return found


def descendants(pid: int) -> set[int]:
    """`pid` and every live process below it in the parent tree, read from /proc."""
    children: dict[int, list[int]] = {}
    if not os.path.isdir("/proc"):
        return {pid}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, ()))
    return found


def end_tree(pid: int, token: str = "") -> list[int]:
    """Kill `pid`, everything below it, its process group and every process marked `token`.

    The tree is frozen (SIGSTOP) before it is killed, so nothing in it can fork away in between;
    a row child is a subreaper (`become_subreaper`), so a daemon its code double-forked is still
    in its tree. Returns what is still alive afterwards (empty: nothing survived).
    """
    frozen: set[int] = set()
    for _ in range(3):
        new = descendants(pid) - frozen
        if not new:
            break
        for p in new:
            signal_pid(signal.SIGSTOP, p)
        frozen |= new
    kill_group(pid)
    for p in frozen | set(marked(token) if token else ()):
        signal_pid(signal.SIGKILL, p)
    deadline = time.monotonic() + 2.0
    while True:
        left = [p for p in frozen - {pid} if _state(p) not in ("Z", "X", "")]
        left += marked(token) if token else []
        if not left or time.monotonic() > deadline:
            return sorted(set(left))
        for p in left:
            signal_pid(signal.SIGKILL, p)
        time.sleep(0.05)


def enter_child(mark: str, stacks, owner_pid: int | None = None) -> None:
    """The first act of every process that runs implementation code (a row child, a rank).

    stacks: the open file faulthandler writes every thread's stack to, on a crash and on
    SIGUSR1 (`dump_stacks`). owner_pid: the process that owns this one; when it is gone
    (a killed pytest, a crashed worker) this child ends its group.
    """
    import faulthandler
    import threading

    os.setsid()  # its own process group: a kill takes everything it started
    become_subreaper()  # and a daemon its code double-forks stays in its tree
    set_pdeathsig()  # and it dies with the process that forked it
    os.environ[MARK_VAR] = mark  # and whatever it starts in a session of its own carries the mark
    faulthandler.enable(file=stacks, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    if owner_pid is not None:
        threading.Thread(target=_exit_with_owner, args=(owner_pid,), name="grl-owner-watch",
                         daemon=True).start()


def _exit_with_owner(owner_pid: int) -> None:
    while True:
        time.sleep(0.5)
        try:
            os.kill(owner_pid, 0)
        except ProcessLookupError:
            os.killpg(0, signal.SIGKILL)  # this child and everything it started (its group)
        except PermissionError:
            pass


def dump_stacks(pids, written, wait_s: float = 3.0, settle_s: float = 0.2) -> None:
    """Ask each child for its Python stacks (SIGUSR1 -> `enter_child`'s faulthandler) and wait
    until `written()` says they are there, or `wait_s`; then `settle_s` for the handlers to finish."""
    for pid in pids:
        signal_pid(signal.SIGUSR1, pid)
    deadline = time.monotonic() + wait_s
    while pids and not written() and time.monotonic() < deadline:
        time.sleep(0.05)
    if pids:
        time.sleep(settle_s)


def end_children(procs, mark: str) -> list[int]:
    """End `procs` (multiprocessing processes started with `enter_child`) and all they started.

    An unreaped child's tree is frozen and killed (`end_tree`: its pid cannot have been reused);
    every child's process group and every process carrying `mark` are killed whether it was
    reaped or not. Then /proc is read: returns what is still alive (empty: nothing survived).
    """
    pids = [p.pid for p in procs]
    left: set[int] = set()
    for p in procs:
        if p.exitcode is None:
            left |= set(end_tree(p.pid, mark))  # its group and the marked ones too
        else:
            kill_group(p.pid)
    left |= set(marked(mark)) | set(group_members(pids))
    for _ in range(2):  # once, and once more for anything that slipped through the first kill
        for pid in left:
            signal_pid(signal.SIGKILL, pid)
        for p in procs:
            p.join(timeout=5)
        if left:
            time.sleep(0.2)
        left = set(marked(mark)) | set(group_members(pids))
        if not left:
            break
    return sorted(left)


def become_subreaper() -> None:
    """Orphans of this process's descendants are re-parented here, not to init (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001 - not Linux: the environment mark still finds them
        pass


def _stat(pid: int) -> list[str]:
    """[state, ppid, pgrp, ...] from /proc/PID/stat, or [] when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _state(pid: int) -> str:
    fields = _stat(pid)
    return fields[0] if fields else ""


def signal_pid(sig: int, pid: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def set_pdeathsig() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:  # noqa: BLE001 - not Linux: the parent's cleanup still kills the group
        pass


def exit_reason(exitcode: int | None) -> str:
    """`killed by SIGSEGV` or `exit code 3` for a child's exit code."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def frames_outside_torch(dump: str, anchor: str, frames: int = 3, skip: str = "") -> str:
    """The innermost frames outside torch of the thread whose stack mentions `anchor`, one line.

    `dump` is faulthandler's text (most recent call first, threads separated by blank lines);
    frames of the file `skip` (the sandbox's own loop) are left out too.
    """
    sections = dump.split("\n\n") if "\n\n" in dump else [dump]
    main = next((sec for sec in sections if anchor in sec), "")
    found = []
    for line in main.splitlines():
        line = line.strip()
        if (not line.startswith("File ") or "/torch/" in line or "/multiprocessing/" in line
                or "/threading.py" in line):
            continue
        path, _, rest = line[len("File "):].partition(", line ")
        if skip and os.path.abspath(path.strip(chr(34))) == skip:
            continue
        lineno, _, fn = rest.partition(" in ")
        found.append(f"{os.path.basename(path.strip(chr(34)))}:{lineno} {fn}")
    return " <- ".join(found[:frames])
