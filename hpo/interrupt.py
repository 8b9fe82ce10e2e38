"""Graceful Ctrl-C: the first SIGINT asks the running trial to stop at the next batch boundary (so
the store is never interrupted mid-transaction and the trial is recorded as interrupted); a second
SIGINT raises KeyboardInterrupt at once.

Signal handling is process-wide by nature: :func:`graceful_sigint` installs the handler (CLI and
worker processes only) and :func:`check` is called by the training loop at safe points.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

logger = logging.getLogger(__name__)

_requested = threading.Event()


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (called at batch boundaries)."""
    if _requested.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def graceful_sigint():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        logger.warning("stopping after the current batch (Ctrl-C again to abort at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()
