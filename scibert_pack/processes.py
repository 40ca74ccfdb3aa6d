"""Stopping a server and everything it started: its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def stop_process_group(
    process: subprocess.Popen[bytes], timeout_s: float, *, first: signal.Signals = signal.SIGTERM
) -> None:
    """`first` (SIGTERM) to the process group of `process` (its leader), SIGKILL after `timeout_s`.

    Children (TorchServe's Python workers) may outlive the leader for a moment; they share its
    group, so the group is killed until nothing in it is left (at most 10 s more).
    """
    for sig, wait in ((first, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and group_alive(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the id: alive, not ours to signal
        return True
    return True
