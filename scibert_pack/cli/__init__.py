"""The `scibert-pack` command: a thin click layer over the library.

Errors are rendered here and nowhere else. Subcommands are imported only when they run, so
`scibert-pack --help` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

import click

from scibert_pack import __version__
from scibert_pack.errors import ScibertPackError

_COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("scibert_pack.cli.build", "Build a TorchServe model store from a classifier folder."),
    "serve": ("scibert_pack.cli.serve", "Run TorchServe on a built model store."),
    "predict": ("scibert_pack.cli.query", "Classify texts on a running server."),
    "explain": ("scibert_pack.cli.query", "Explain predictions on a running server."),
    "upload": ("scibert_pack.cli.upload", "Sync a model store to S3 or a PVC."),
    "manifest": ("scibert_pack.cli.manifest", "Write KServe InferenceService YAML."),
    "demo": ("scibert_pack.cli.demo", "Run the whole path end to end on a demo model."),
    "bench": ("scibert_pack.cli.bench", "Load-test a served model (throughput, latency)."),
    "rehearse": ("scibert_pack.cli.rehearse", "Run a manifest's runtime as a pod would, locally."),
}


class _RenderedError(click.ClickException):
    """A ScibertPackError shown the click way: 'Error: ...' on stderr, with its exit code."""

    def __init__(self, err: ScibertPackError) -> None:
        super().__init__(str(err))
        self.exit_code = err.exit_code  # type: ignore[misc]  # click reads it per instance


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._available()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        known = super().get_command(ctx, cmd_name)
        if known is not None or cmd_name not in self._available():
            return known
        module = importlib.import_module(_COMMANDS[cmd_name][0])
        command = getattr(module, cmd_name.replace("-", "_"))
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScibertPackError as err:
            raise _RenderedError(err) from err

    @staticmethod
    def _available() -> set[str]:
        return {
            name
            for name, (module, _) in _COMMANDS.items()
            if importlib.util.find_spec(module) is not None
        }


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scibert-pack")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """scibert-pack: a fine-tuned Hugging Face text classifier to KServe on TorchServe."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="scibert-pack")
