"""`scibert-pack demo`: the whole path on a real small model; progress on stderr, summary on
stdout."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from scibert_pack.cli._console import Console
from scibert_pack.client.report_html import SPECIAL_TOKENS

if TYPE_CHECKING:
    from scibert_pack.demo.run import DemoResult

TOP_WORDS = 3
# Seconds in the summary's step table are right-aligned in this many columns.
_NAME_WIDTH = 24


@click.command("demo")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo-work"),
    show_default=True,
    help="Where every artefact goes; rerunning in it reuses the trained model.",
)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Use this trained classifier instead of fine-tuning the demo one.",
)
@click.option("--epochs", type=int, help="Training epochs (default 3).")
@click.option(
    "--text",
    "texts",
    multiple=True,
    help="A text to classify and explain (repeatable; default: the blog's sentence and five "
    "others).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def demo(
    workdir: Path,
    model_dir: Path | None,
    epochs: int | None,
    texts: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Run the whole path end to end: train a small real classifier of scientific fields,
    build, serve on TorchServe, predict and explain, write an HTML report, upload to a local
    S3 server and a PVC-style folder, write the InferenceService manifest. Offline; stops
    everything it starts."""
    from dataclasses import replace

    from scibert_pack.demo.run import DEMO_TEXTS, DemoSettings, run_demo, summary_json
    from scibert_pack.demo.train import TrainSettings

    console = Console(quiet=quiet)
    _quiet_libraries()
    train = TrainSettings() if epochs is None else replace(TrainSettings(), epochs=epochs)
    settings = DemoSettings(
        workdir=workdir, model_dir=model_dir, texts=texts or DEMO_TEXTS, train=train
    )

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        result = run_demo(settings, progress=console.progress)
    except KeyboardInterrupt:
        console.warn("interrupted: everything the demo had started is stopped")
        raise click.exceptions.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    for warning in result.manifest_warnings:
        console.warn(warning)
    if as_json:
        console.data(json.dumps(summary_json(result), indent=2))
    else:
        console.data(summary_text(result))


def summary_text(result: DemoResult) -> str:
    lines = [f"scibert-pack demo: done in {result.total_seconds:.0f} s, in {result.workdir}", ""]
    training = result.training
    if training is None:
        lines.append(f"model       {result.model_dir} (given, not trained)")
    else:
        how = "trained" if training.trained else "reused, trained earlier"
        held_out = sum(n for _, _, n in training.per_label)
        lines.append(
            f"model       {result.model_dir} ({how} in {training.seconds:.0f} s); "
            f"held-out accuracy {training.held_out_accuracy:.3f} on {held_out} sentences"
        )
        lines.append(
            "            " + ", ".join(f"{lab} {c}/{n}" for lab, c, n in training.per_label)
        )
    lines.append(f"store       {result.store} (model {result.model_name})")
    lines.append("")
    width = max(len("LABEL"), *(len(p.label) for p in result.predictions))
    lines.append(f"{'LABEL':<{width}}  {'P':>5}  TEXT / MOST IMPORTANT WORDS")
    for p, x in zip(result.predictions, result.explanations, strict=True):
        lines.append(f"{p.label:<{width}}  {p.probabilities[p.label]:>5.3f}  {p.text}")
        ranked = sorted(
            (
                (w, v)
                for w, v in zip(x.words, x.importances, strict=True)
                if w not in SPECIAL_TOKENS
            ),
            key=lambda wv: abs(wv[1]),
            reverse=True,
        )[:TOP_WORDS]
        pad = " " * (width + 9)
        lines.append(pad + ", ".join(f"{w} {v:+.2f}" for w, v in ranked))
    lines += [
        "",
        f"report      {result.report}",
        f"storageUri  {result.s3_uri}  (local S3 server {result.s3_endpoint}, now stopped)",
        f"storageUri  {result.pvc_uri}  (claim folder {result.pvc_mount})",
        f"manifest    {result.manifest}  (image: build it from {result.dockerfile.name})",
        f"summary     {result.summary_file}",
        "",
        "steps",
    ]
    lines += [f"  {s.name:<{_NAME_WIDTH}}{s.seconds:>7.1f} s" for s in result.steps]
    lines += [
        f"  {'total':<{_NAME_WIDTH}}{result.total_seconds:>7.1f} s",
        "",
        "TorchServe and the local S3 server are stopped.",
    ]
    return "\n".join(lines)


def _quiet_libraries() -> None:
    """Progress bars and load reports of Hugging Face libraries would drown the demo's own."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
