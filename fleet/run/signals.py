"""Ending a run cleanly on Ctrl-C, SIGTERM or a crash.

Flower's simulation runs the ServerApp in a thread of this process and the
ClientApps on a Ray instance that this process starts (gcs_server, raylet,
agents and one worker per CPU, all its descendants). Ctrl-C raises
KeyboardInterrupt in the main thread, which unwinds Flower's simulation loop;
SIGTERM is turned into `Terminated`, a KeyboardInterrupt, until Ray is up and
after that into SystemExit(SIGTERM) by Ray's own handler, which `stopping`
treats the same way.

`stopping` wraps the part of a run that starts those processes: when the block
is interrupted or fails, it first lets the caller record how the run ended
(e.g. summary.json with status `interrupted` or `failed`), then shuts Ray down
and ends every process the block started that is still alive. Flower's server
thread may still be waiting out its round timeout; the CLI therefore leaves
with os._exit once everything is written (see `fleet.cli.main`).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fleet.run import watchdog
from fleet.run.processes import descendants, end_processes

# Ray's C++ core prints a stack dump on SIGTERM (and other signals) in every process it runs in; SIGTERM is an
# expected way to stop a run, which should end with one line. Read when Ray starts, so set on import.
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")

STATUSES = ("complete", "interrupted", "failed")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a KeyboardInterrupt so that one path handles both ways of stopping a run."""


def raise_terminated(signum: int, frame) -> None:
    """A signal handler: SIGTERM becomes `Terminated` in the main thread."""
    raise Terminated()


def handle_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into `Terminated` (main thread only); returns a function that restores the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, raise_terminated)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def relay_signals() -> Callable[[], None]:
    """Make SIGINT and SIGTERM wake the main thread wherever the kernel delivers them; returns a
    function that undoes it.

    A process signal lands on any thread that does not block it, and Python runs its handler in
    the main thread only once that thread runs bytecode again. Flower's simulation blocks the main
    thread in a thread join without a timeout until the run ends, so a Ctrl-C delivered to another
    thread waited for the end of the run (and was lost in its shutdown). A relay thread reads the
    signal wakeup fd and sends the main thread a no-op SIGUSR1, which breaks the join with EINTR so
    that the pending handler runs there.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous_wake = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    main = threading.main_thread().ident
    assert main is not None  # set once a thread has started, and this is the main thread

    def relay() -> None:
        while data := os.read(read_fd, 64):  # empty once the write end is closed
            if signal.SIGINT in data or signal.SIGTERM in data:
                signal.pthread_kill(main, signal.SIGUSR1)

    thread = threading.Thread(target=relay, name="fleet-signal-relay", daemon=True)
    thread.start()

    def undo() -> None:
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)
        thread.join(timeout=1.0)
        os.close(read_fd)
        signal.signal(signal.SIGUSR1, previous_wake)

    return undo


@contextmanager
def stopping(on_stop: Callable[[str], None], *, watch: bool = False,
             scratch: Path | None = None) -> Iterator[None]:
    """Run the block; if it is interrupted or fails, call on_stop(status), then re-raise.

    status is "interrupted" (Ctrl-C, SIGTERM) or "failed" (any other
    exception). Whatever happens, Ray is shut down, every process started
    inside the block that is still alive afterwards is ended and the `scratch`
    folder is removed. With `watch`, a watchdog process (fleet.run.watchdog) does
    the same if this process is killed outright. SIGTERM comes out as
    `Terminated`.
    """
    guard = watchdog.start(scratch) if watch else None
    before = descendants()
    restore = handle_sigterm()
    unrelay = relay_signals()
    try:
        yield
    except KeyboardInterrupt:
        _stop(on_stop, "interrupted", before)
        raise
    except SystemExit as err:
        if err.code != signal.SIGTERM:  # Ray's SIGTERM handler exits with the signal number
            _stop(on_stop, "failed", before)
            raise
        _stop(on_stop, "interrupted", before)
        raise Terminated() from None
    except BaseException:
        _stop(on_stop, "failed", before)
        raise
    finally:
        unrelay()
        restore()
        end_processes(descendants() - before)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if guard is not None:
            assert guard.stdin is not None  # watchdog.start opens it as a pipe
            guard.stdin.close()
            guard.wait()


def _stop(on_stop: Callable[[str], None], status: str, before: set[tuple[int, int]]) -> None:
    started = descendants() - before  # before Ray's shutdown orphans its workers
    try:
        on_stop(status)
    finally:
        shutdown_ray()
        end_processes(started)


def shutdown_ray() -> None:
    """ray.shutdown() if this process started Ray (it ends the processes ray.init started)."""
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    except Exception:  # stopping must go on; leftover processes are ended one by one
        pass
