"""Ctrl-C that always ends the command: in order when it can, at once when it cannot.

An upload's transfer threads can sit in a socket read on a stalled network for minutes (the
S3 client's read timeout, times its retries), and a KeyboardInterrupt waits for them. Nothing
is lost by not waiting: an upload's completion record is written last and a rerun resumes
(aborting multipart uploads left open).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def stop_within(seconds: float, last_words: Callable[[], None]) -> Iterator[None]:
    """Inside the block, Ctrl-C raises KeyboardInterrupt as usual; if the work has not stopped
    `seconds` later, or Ctrl-C comes again, `last_words()` runs and the process exits 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    timer: threading.Timer | None = None

    def quit_now() -> None:
        last_words()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal timer
        if timer is not None:
            quit_now()
        timer = threading.Timer(seconds, quit_now)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if timer is not None:
            timer.cancel()
