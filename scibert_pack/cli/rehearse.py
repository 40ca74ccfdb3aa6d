"""`scibert-pack rehearse`: run the manifest's runtime as a pod would, before `kubectl apply`.

Progress, findings and the log tail go to stderr; the answers (JSON) to stdout. Exit 0 only
when the pod became Ready and answered with no problem found.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from scibert_pack.cli._console import Console
from scibert_pack.kserve import rehearsal
from scibert_pack.kserve.rehearsal import RehearsalReport, RehearsalSettings


@click.command("rehearse")
@click.option(
    "-f",
    "--filename",
    "manifest",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The YAML `scibert-pack manifest` wrote.",
)
@click.option(
    "--store",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local model store (OUT of `scibert-pack build`) instead of fetching the storageUri.",
)
@click.option(
    "--endpoint-url",
    help="S3 endpoint for the storageUri (AWS_ENDPOINT_URL); credentials from AWS_* variables.",
)
@click.option("--model-name", help="Model name in request URLs (default: what TorchServe serves).")
@click.option(
    "--dockerfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The runtime's Dockerfile (default: Dockerfile.scibert-pack beside the manifest).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds from container start to wait for Ready and the first answer.",
)
@click.option(
    "--isolation",
    type=click.Choice(["auto", "none"]),
    default="auto",
    show_default=True,
    help="none: a partial rehearsal without namespaces (what runs without root).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines (findings still show).")
def rehearse(
    manifest: Path,
    store: Path | None,
    endpoint_url: str | None,
    model_name: str | None,
    dockerfile: Path | None,
    timeout_s: float,
    isolation: str,
    quiet: bool,
) -> None:
    """Run the manifest's ServingRuntime on its model store as the pod would, probe it like the
    kubelet and send it the blog's requests like the ingress; exit 0 only if it served."""
    console = Console(quiet=quiet)
    settings = RehearsalSettings(
        manifest=manifest,
        store=store,
        endpoint_url=endpoint_url,
        model_name=model_name,
        dockerfile=dockerfile,
        timeout_s=timeout_s,
        isolation="none" if isolation == "none" else "auto",
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = rehearsal.rehearse(settings, progress=console.progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _render(report, console)
    if not report.ok:
        sys.exit(1)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the pod is stopped and its folders removed.
    raise KeyboardInterrupt


def _render(report: RehearsalReport, console: Console) -> None:
    echo = console.progress
    plan = report.plan
    echo(f"rehearsal of InferenceService {plan.isvc_name!r} (runtime {plan.runtime_name!r})")
    if report.stand_in:
        echo(f"stand-in: {report.stand_in}")
    for line in report.not_rehearsed:
        echo(f"not rehearsed: {line}")
    for finding in report.findings:
        text = f"[{finding.code}] {finding.message}\n  fix: {finding.fix}"
        if finding.severity == "problem":
            click.echo(f"Problem: {text}", err=True)
        else:
            echo(f"Note: {text}")
    if report.ready_after_s is not None:
        echo(f"container start -> Ready: {report.ready_after_s:.1f} s (the scale-from-zero cost)")
    if report.answering_after_s is not None:
        echo(f"container start -> first answer: {report.answering_after_s:.1f} s")
    if report.mode != "static" and not report.ok and report.log_tail:
        click.echo("container log (tail):\n" + report.log_tail, err=True)
    if report.answers:
        console.json(
            {
                "model_name": report.model_name,
                "ready_after_s": round(report.ready_after_s or 0.0, 2),
                "answers": [
                    {
                        "route": a.route,
                        "path": a.path,
                        "status": a.status,
                        "seconds": round(a.seconds, 3),
                        "body": a.body,
                    }
                    for a in report.answers
                ],
            }
        )
    verdict = {
        "full": "rehearsal",
        "partial": "PARTIAL rehearsal",
        "static": "rehearsal (static only)",
    }[report.mode]
    if report.ok:
        click.echo(f"{verdict} passed: the pod became Ready and answered", err=True)
    else:
        click.echo(f"{verdict} FAILED: {len(report.problems)} problem(s) above", err=True)
