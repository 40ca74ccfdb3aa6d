"""How the library reports progress: one line at a time to a sink the caller chooses.

The library never prints; the CLI passes a sink that writes to stderr (or nothing with --quiet).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressSink = Callable[[str], None]


def silent(_: str) -> None:
    """The default sink: progress goes nowhere."""
