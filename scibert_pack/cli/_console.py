"""Where CLI output goes: data to stdout, progress and logs to stderr."""

from __future__ import annotations

import json
from typing import Any

import click


class Console:
    """Progress lines on stderr (silenced by --quiet); data on stdout."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def progress(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    def warn(self, message: str) -> None:
        click.echo(f"Warning: {message}", err=True)

    @staticmethod
    def data(text: str) -> None:
        click.echo(text)

    @staticmethod
    def json(obj: Any) -> None:
        click.echo(json.dumps(obj, indent=2, sort_keys=True))
