"""`scibert-pack build`: options -> BuildSettings -> scibert_pack.archiver.build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from scibert_pack.archiver.settings import (
    ARCHIVE_FORMATS,
    NAME_RULE,
    BuildSettings,
)
from scibert_pack.cli._console import Console
from scibert_pack.cli._options import RenamedOption
from scibert_pack.config.properties import PROFILES, Ports
from scibert_pack.handlers.settings import DEVICES, RUNTIMES, HandlerSettings

_HANDLER_OPTIONS = (
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
    "allow_pickle",
    "runtime",
)
_DEFAULTS = HandlerSettings()
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
                f"{_shown(value)} is not a size; give bytes or a number with a unit "
                "(B, KB, MB, GB, KiB, MiB, GiB), e.g. 10MiB",
                param,
                ctx,
            )
        return int(match.group(1)) * _UNITS[match.group(2)]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]}"


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--model-name",
    "--name",
    "name",
    cls=RenamedOption,
    old=["--name"],
    required=True,
    help=f"Model name: the key in request URLs and the archive's file name ({NAME_RULE}).",
)
@click.option("--version", "model_version", default=BuildSettings.version, show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    help="Store folder to write (default: ./build/NAME).",
)
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default=BuildSettings.profile,
    show_default=True,
    help="kserve: listen on 0.0.0.0, store at /mnt/models/model-store. local: loopback only.",
)
@click.option(
    "--archive-format",
    type=click.Choice(ARCHIVE_FORMATS),
    default=BuildSettings.archive_format,
    show_default=True,
    help="zip-store does not compress: weights do not compress, and it loads faster.",
)
@click.option(
    "--batch-size",
    default=BuildSettings.batch_size,
    show_default=True,
    help="TorchServe batchSize.",
)
@click.option(
    "--max-batch-delay",
    default=BuildSettings.max_batch_delay_ms,
    show_default=True,
    help="Milliseconds.",
)
@click.option(
    "--min-workers",
    default=BuildSettings.min_workers,
    show_default=True,
    help="Python workers started per model; each gets its share of the CPUs (--torch-threads 0).",
)
@click.option("--max-workers", default=BuildSettings.max_workers, show_default=True)
@click.option(
    "--response-timeout",
    default=BuildSettings.response_timeout_s,
    show_default=True,
    help="Seconds.",
)
@click.option(
    "--startup-timeout", default=BuildSettings.startup_timeout_s, show_default=True, help="Seconds."
)
@click.option("--netty-threads", default=BuildSettings.netty_threads, show_default=True)
@click.option("--job-queue-size", default=BuildSettings.job_queue_size, show_default=True)
@click.option(
    "--max-request-size",
    type=ByteSize(),
    default=BuildSettings.max_request_bytes,
    show_default=True,
    help="Largest request body TorchServe accepts (bytes, or e.g. 10MiB); bigger ones get 413.",
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
@click.option("--token-auth", is_flag=True, help="Require TorchServe's bearer token on every call.")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Accept pytorch_model.bin weights. Pickle files can run code when loaded: trust them.",
)
@click.option(
    "--max-length",
    type=int,
    help=f"Truncate texts to this many tokens (8 or more; default: the smaller of "
    f"{_DEFAULTS.max_length} and the model's maximum).",
)
@click.option("--explain-steps", default=_DEFAULTS.explain_steps, show_default=True)
@click.option("--max-explain-steps", default=_DEFAULTS.max_explain_steps, show_default=True)
@click.option(
    "--explain-tolerance",
    type=float,
    default=_DEFAULTS.explain_tolerance,
    show_default=True,
    help="Explain requests without n_steps get the fewest steps (8, 16, 32, ...) whose "
    "|convergence delta| is at most this (a class probability's error; 1e-06 to 0.1); "
    "0: they get --explain-steps.",
)
@click.option("--internal-batch-size", default=_DEFAULTS.internal_batch_size, show_default=True)
@click.option(
    "--merge-subwords/--no-merge-subwords",
    default=_DEFAULTS.merge_subwords,
    show_default=True,
    help="Merge word pieces into words in explanations.",
)
@click.option("--max-texts-per-request", default=_DEFAULTS.max_texts_per_request, show_default=True)
@click.option("--max-text-chars", default=_DEFAULTS.max_text_chars, show_default=True)
@click.option(
    "--max-explain-texts",
    default=_DEFAULTS.max_explain_texts,
    show_default=True,
    help="Most texts one explain request may hold (each costs n_steps forward passes).",
)
@click.option(
    "--max-explain-work",
    default=_DEFAULTS.max_explain_work,
    show_default=True,
    help="Most texts x n_steps one explain request may ask for; bigger ones get 413 "
    "(the default lets 16 texts x 50 steps through).",
)
@click.option(
    "--max-batch-tokens",
    default=_DEFAULTS.max_batch_tokens,
    show_default=True,
    help="Most padded tokens (texts x longest text) in one forward pass; bigger batches run as "
    "several passes (explanations: a quarter of it). Bounds the worker's memory.",
)
@click.option(
    "--torch-threads",
    default=_DEFAULTS.torch_threads,
    show_default=True,
    help="torch threads per worker; 0: the usable CPUs (cgroup CPU limit included) divided by "
    "--min-workers.",
)
@click.option(
    "--lend-idle-cpus/--no-lend-idle-cpus",
    default=_DEFAULTS.lend_idle_cpus,
    show_default=True,
    help="With --torch-threads 0: a lone explanation runs on all usable CPUs while the other "
    "workers are idle (see BENCHMARKS.md, Explain, before turning it on).",
)
@click.option("--device", type=click.Choice(DEVICES), default=_DEFAULTS.device, show_default=True)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=_DEFAULTS.runtime,
    show_default=True,
    help="What computes predictions: torch; onnx (ONNX Runtime over a model.onnx exported and "
    "checked against torch at build time); torch-int8 (approximate, see "
    "--min-label-agreement). Explanations always run on the fp32 torch model. See BENCHMARKS.md.",
)
@click.option(
    "--min-label-agreement",
    type=float,
    default=0.98,
    show_default=True,
    help="--runtime torch-int8: the least share of held-out demo-corpus texts whose int8 label "
    "must be fp32's, else the build fails.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the build result as JSON on stdout.")
def build(model_dir: Path, output: Path | None, quiet: bool, as_json: bool, **options: Any) -> None:
    """Build OUT/model-store/NAME.mar and OUT/config/config.properties from MODEL_DIR."""
    from scibert_pack.archiver.build import build as run_build

    console = Console(quiet=quiet or as_json)
    settings = _settings(options)
    out = output or Path("build") / settings.name
    result = run_build(model_dir, settings, out, progress=console.progress)
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
    from scibert_pack.archiver.build import handler_settings_from_options

    handler_values = {key: options.pop(key) for key in _HANDLER_OPTIONS}
    source = click.get_current_context().get_parameter_source
    defaulted = {key for key in handler_values if source(key) is ParameterSource.DEFAULT}
    handler = handler_settings_from_options(handler_values, defaulted=defaulted)
    grpc = options.pop("grpc_port")
    ports = Ports(
        inference=options.pop("inference_port"),
        management=options.pop("management_port"),
        metrics=options.pop("metrics_port"),
        grpc_inference=grpc,
        grpc_management=grpc + 1,
    )
    return BuildSettings(
        name=options.pop("name"),
        version=options.pop("model_version"),
        profile=options.pop("profile"),
        archive_format=options.pop("archive_format"),
        batch_size=options.pop("batch_size"),
        max_batch_delay_ms=options.pop("max_batch_delay"),
        min_workers=options.pop("min_workers"),
        max_workers=options.pop("max_workers"),
        response_timeout_s=options.pop("response_timeout"),
        startup_timeout_s=options.pop("startup_timeout"),
        netty_threads=options.pop("netty_threads"),
        job_queue_size=options.pop("job_queue_size"),
        max_request_bytes=options.pop("max_request_size"),
        token_auth=options.pop("token_auth"),
        max_length=options.pop("max_length"),
        min_label_agreement=options.pop("min_label_agreement"),
        ports=ports,
        handler=handler,
    )
