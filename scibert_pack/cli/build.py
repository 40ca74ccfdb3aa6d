"""`scibert-pack build`: options -> BuildSettings -> scibert_pack.api.build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from scibert_pack.api import BuildSettings, build_settings
from scibert_pack.archiver.settings import quoted
from scibert_pack.cli._console import Console
from scibert_pack.cli._options import setting_options
from scibert_pack.config.properties import Ports
from scibert_pack.handlers.settings import HandlerSettings

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d{1,20})\s*([a-z]*)\s*$")  # 20 digits: far past any limit


class ByteSize(click.ParamType[int]):
    """A size in bytes: 10485760, 10MiB, 10MB (1000-based) or 512KiB."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(str(value).lower())
        if match is None or match.group(2) not in _UNITS:
            self.fail(
                f"{quoted(value)} is not a size; give bytes or a number with a unit "
                "(B, KB, MB, GB, KiB, MiB, GiB), e.g. 10MiB",
                param,
                ctx,
            )
        return int(match.group(1)) * _UNITS[match.group(2)]


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@setting_options(BuildSettings, "name", "version")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    help="Store folder to write (default: ./build/NAME).",
)
@setting_options(
    BuildSettings,
    "profile",
    "archive_format",
    "batch_size",
    "max_batch_delay_ms",
    "min_workers",
    "max_workers",
    "response_timeout_s",
    "startup_timeout_s",
    "netty_threads",
    "job_queue_size",
    "max_request_bytes",
    types={"max_request_bytes": ByteSize()},
)
@click.option("--inference-port", default=Ports.inference, show_default=True)
@click.option("--management-port", default=Ports.management, show_default=True)
@click.option("--metrics-port", default=Ports.metrics, show_default=True)
@click.option(
    "--grpc-port",
    default=Ports.grpc_inference,
    show_default=True,
    help="gRPC inference port; gRPC management is the next one.",
)
@setting_options(BuildSettings, "token_auth")
@setting_options(HandlerSettings, "allow_pickle")
@setting_options(BuildSettings, "max_length")
@setting_options(
    HandlerSettings,
    "explain_steps",
    "max_explain_steps",
    "explain_tolerance",
    "internal_batch_size",
    "merge_subwords",
    "max_texts_per_request",
    "max_text_chars",
    "max_explain_texts",
    "max_explain_work",
    "max_batch_tokens",
    "torch_threads",
    "lend_idle_cpus",
    "device",
    "runtime",
    "pack_weights",
    "trim_last_layer",
)
@setting_options(BuildSettings, "min_label_agreement")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the build result as JSON on stdout.")
def build(model_dir: Path, output: Path | None, quiet: bool, as_json: bool, **options: Any) -> None:
    """Build OUT/model-store/NAME.mar and OUT/config/config.properties from MODEL_DIR."""
    from scibert_pack import api

    console = Console(quiet=quiet or as_json)
    settings = _settings(options)
    out = output or Path("build") / settings.name
    result = api.build(model_dir, out, settings, progress=console.progress)
    for warning in result.warnings:
        console.warn(warning)
    if as_json:
        console.json(
            {
                "output": str(result.output),
                "archive": str(result.archive),
                "config": str(result.config),
                "report": str(result.report_path),
                "seconds": round(result.seconds, 3),
                "warnings": list(result.warnings),
                "build_report": result.report,
            }
        )
        return
    console.data(str(result.output))
    console.progress(f"next: scibert-pack serve {result.output}")


def _settings(options: dict[str, Any]) -> BuildSettings:
    """The settings the user gave (an option left at its default is left out, so a conflict
    between two settings blames the one given), with the ports as one record."""
    source = click.get_current_context().get_parameter_source
    grpc = options.pop("grpc_port")
    ports = Ports(
        inference=options.pop("inference_port"),
        management=options.pop("management_port"),
        metrics=options.pop("metrics_port"),
        grpc_inference=grpc,
        grpc_management=grpc + 1,
    )
    given = {k: v for k, v in options.items() if source(k) is not ParameterSource.DEFAULT}
    return build_settings({**given, "name": options["name"], "ports": ports})
