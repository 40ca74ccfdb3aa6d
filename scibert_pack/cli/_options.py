"""Click options made from settings declarations, and old spellings that keep working but stay
out of --help."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from scibert_pack.handlers.settings import Declared, declarations, option_of

F = TypeVar("F", bound=Callable[..., Any])


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


def setting_options(
    cls: type, *keys: str, types: Mapping[str, click.ParamType[Any]] | None = None
) -> Callable[[F], F]:
    """Click options for the declared settings `keys` of a settings dataclass, in that order:
    spelling, old spellings, default, choices and help all come from the declaration
    (handlers/settings.py `setting`), so the command cannot drift from what the library checks.
    Ranges are shown in the help but checked by the library, whose message names the option."""
    declared = declarations(cls)
    options = [_option(key, declared, (types or {}).get(key)) for key in keys]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _option(
    key: str, declared: Mapping[str, Declared], param_type: click.ParamType[Any] | None
) -> Callable[[F], F]:
    d = declared[key]
    spelling = option_of(key, d)
    kwargs: dict[str, Any] = {"help": _help(d, declared)}
    if d.old:
        kwargs.update(cls=RenamedOption, old=list(d.old))
    if d.default is dataclasses.MISSING:
        kwargs["required"] = True
    elif isinstance(d.default, bool):
        if d.negatable:
            spelling = f"{spelling}/--no-{spelling.removeprefix('--')}"
            kwargs.update(default=d.default, show_default=True)
        else:
            kwargs.update(is_flag=True, default=d.default)
    else:
        kwargs.update(default=d.default, show_default=d.default is not None)
        if d.choices:
            kwargs["type"] = click.Choice(d.choices)
        elif param_type is not None:
            kwargs["type"] = param_type
        elif d.default is None:
            kwargs["type"] = int
    return click.option(spelling, *d.old, key, **kwargs)


def _help(d: Declared, declared: Mapping[str, Declared]) -> str:
    if d.low is None or d.high is None:
        return d.help
    if isinstance(d.high, str):  # capped by another setting
        return f"{d.help} Range: {d.low} to the cap ({option_of(d.high, declared[d.high])})."
    return f"{d.help} Range: {d.low} to {d.high}."
