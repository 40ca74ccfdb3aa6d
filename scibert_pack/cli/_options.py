"""Click options with old spellings that keep working but stay out of --help."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click


class RenamedOption(click.Option):
    """An option renamed so one thing has one name across commands; `old` spellings (also in
    the declaration) are still accepted, while --help and error messages show only the new."""

    def __init__(self, *args: Any, old: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old_names = tuple(old)
        unknown = set(self.old_names) - set(self.opts)
        if unknown:  # a typo here would silently drop the alias
            raise TypeError(f"old spellings {sorted(unknown)} are not declared on {self.name}")

    @contextmanager
    def _new_names_only(self) -> Iterator[None]:
        opts = self.opts
        self.opts = [o for o in opts if o not in self.old_names]
        try:
            yield
        finally:
            self.opts = opts

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        with self._new_names_only():
            return super().get_help_record(ctx)

    def get_error_hint(self, ctx: click.Context | None) -> str:
        with self._new_names_only():
            return super().get_error_hint(ctx)  # type: ignore[arg-type]  # click < 8.4: ctx
