"""The processes cells, ranks and timing run in: a forkserver with torch already imported."""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from datetime import datetime, timezone
from multiprocessing import forkserver

_CTX = None


def context():
    """A forkserver context whose server has torch and modelopt imported: each cell starts
    as a cheap fork of it, with a fresh memory high-water mark
    (docs/explanation/measurement.md). glibc's malloc keeps its defaults: users train with
    them, and a fixed mmap threshold slowed training to 0.75x and doubled batch latency
    here."""
    global _CTX
    if _CTX is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["modelopt.run.preload"])
        # started now, with SIGINT and SIGTERM open: every cell, rank and timing process
        # inherits the server's signal mask, and a server started lazily by the first
        # start (which the scheduler makes with both blocked, see Scheduler._start) would
        # leave them all deaf to SIGTERM: a timed-out cell's ranks trained on as orphans
        held = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            forkserver.ensure_running()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        _CTX = ctx
    return _CTX


def end(proc, grace_s: float = 3.0) -> None:
    """Stop a process: SIGTERM, then SIGKILL after `grace_s`; reaped either way."""
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=grace_s)
    if proc.is_alive():
        proc.kill()
    proc.join()


def exit_reason(code: int | None) -> str:
    """Why a process that never reported ended, in words."""
    if code is not None and code < 0:
        return f"the cell's process died from {signal_words(-code)}"
    return f"the cell's process exited with code {code} without reporting a result"


def signal_words(number: int) -> str:
    """"signal SIGKILL (...)": a signal that ended a process, by name where it has one."""
    try:
        name = signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        name = str(number)
    hint = " (SIGKILL: often the out-of-memory killer)" if name == "SIGKILL" else ""
    return f"signal {name}{hint}"


def now() -> str:
    """Wall-clock time for a record."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def interrupt(signum, frame):
    """A signal handler: the signal read as Ctrl-C."""
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt, so a run ends its cells and keeps its results as on
    Ctrl-C instead of dying with its children orphaned."""
    signal.signal(signal.SIGTERM, interrupt)


def ctrl_c_interrupts() -> None:
    """A run started with SIGINT ignored (a shell's background job, or a parent that ignored
    it when it started us: Python then installs no handler) still ends on Ctrl-C, with its
    cells ended and its results kept. Only the main thread may set a handler."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)
