"""Graceful stop on Ctrl-C (SIGINT) and SIGTERM (docker stop, Kubernetes, Slurm): the first signal
asks the running trial to stop at the next batch boundary of training *or evaluation* (so the store
is never interrupted mid-transaction and the trial is recorded as interrupted, then re-queued when the
study resumes); a second signal raises KeyboardInterrupt at once.

Signal handling is process-wide by nature: :func:`graceful_sigint` installs the handlers (CLI and
worker processes only) and :func:`check` is called by the training loop at safe points.
:func:`last_signal` tells the CLI which signal stopped it (exit code ``128 + signum``: 130 or 143).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

logger = logging.getLogger(__name__)

_requested = threading.Event()
_last_signal: list[int] = []  # the signal that asked to stop (kept after the handlers are removed)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def requested() -> bool:
    return _requested.is_set()


def last_signal() -> int | None:
    """The signal number that asked this process to stop (None if none did)."""
    return _last_signal[-1] if _last_signal else None


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (called at batch boundaries)."""
    if _requested.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def graceful_sigint():
    """Handle SIGINT and SIGTERM gracefully inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _last_signal.append(signum)
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        # the CLI prints one line when the trial has stopped; this one is for -v
        logger.debug("%s: stopping after the current batch (again to abort at once)", signal.Signals(signum).name)

    _last_signal.clear()
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _requested.clear()
