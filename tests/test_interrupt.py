"""Ctrl-C always ends a command: in order when the work stops, at once when it cannot
(scibert_pack.cli._interrupt.stop_within), as a user presses it on a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from scibert_pack.interrupts import interrupt_after

SCRIPT = """
import sys, time
from scibert_pack.cli._interrupt import stop_within

mode = sys.argv[1]
try:
    with stop_within(1.0, lambda: print("last words", file=sys.stderr, flush=True)):
        try:
            print("ready", flush=True)  # the handler and the stop below are in place
            time.sleep(600)
        except KeyboardInterrupt:
            if mode == "stuck":
                time.sleep(600)  # an orderly stop that waits on a stalled transfer
            raise
except KeyboardInterrupt:
    time.sleep(2)  # past the grace: the hard stop must have been called off
    print("stopped in order", file=sys.stderr, flush=True)
    sys.exit(7)
"""

# (mode, Ctrl-C presses, exit code, what stderr says)
CASES = [
    ("in-order", 1, 7, "stopped in order"),
    ("stuck", 1, 130, "last words"),
    ("stuck", 2, 130, "last words"),
]


@pytest.mark.parametrize(
    ("mode", "presses", "code", "said"),
    CASES,
    ids=["stops-in-order", "stuck-quits-after-grace", "second-ctrl-c-quits-now"],
)
def test_ctrl_c_always_ends_the_command(mode: str, presses: int, code: int, said: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == said


def test_ctrl_c_during_a_publish_waits_for_its_end() -> None:
    """build's renames run in interrupt_after: a Ctrl-C between two of them leaves the store
    whole (old or new), then stops the command as usual."""
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupt_after():
        done.append("archive")
        signal.raise_signal(signal.SIGINT)
        done.append("config")
        done.append("report")
    assert done == ["archive", "config", "report"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_ctrl_c_goes_to_the_handler_that_was_in_place() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with interrupt_after():
            signal.raise_signal(signal.SIGINT)
            assert seen == []
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_no_ctrl_c_no_interrupt() -> None:
    with interrupt_after():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
