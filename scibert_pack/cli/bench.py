"""`scibert-pack bench`: load-test a served model and print throughput and latency percentiles."""

from __future__ import annotations

from pathlib import Path

import click

from scibert_pack.cli._console import Console
from scibert_pack.cli._options import RenamedOption
from scibert_pack.config.properties import LOCAL_INFERENCE_URL
from scibert_pack.errors import ClientError


@click.command()
@click.option("--url", default=LOCAL_INFERENCE_URL, show_default=True)
@click.option(
    "--model-name",
    "--model",
    "model",
    cls=RenamedOption,
    old=["--model"],
    required=True,
    help="Model name (the URL key).",
)
@click.option("-c", "--concurrency", default=8, show_default=True, help="Concurrent workers.")
@click.option("--duration", type=float, help="Run for this many seconds.")
@click.option("-n", "--requests", "count", type=int, help="Send this many requests.")
@click.option("--warmup", default=0, show_default=True, help="Untimed requests sent first.")
@click.option("--explain", is_flag=True, help="Load /explain instead of /infer.")
@click.option(
    "--payload",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON request body (default: a v2 body with the blog post's sentence).",
)
@click.option(
    "--token", envvar="SCIBERT_PACK_TOKEN", help="Bearer token (archives built with --token-auth)."
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="key_file.json written by TorchServe (default: the one `serve` wrote).",
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per request.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def bench(
    url: str,
    model: str,
    concurrency: int,
    duration: float | None,
    count: int | None,
    warmup: int,
    explain: bool,
    payload: Path | None,
    token: str | None,
    key_file: Path | None,
    timeout: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """Load-test a served model: closed-loop workers, then throughput, latency, statuses.

    Stops after --requests N or --duration S (default: 200 requests).
    """
    from scibert_pack.client.inference_client import find_token
    from scibert_pack.client.load_generator import (
        LoadRunner,
        LoadSettings,
        default_payload,
        read_payload,
    )

    console = Console(quiet=quiet)
    if duration is not None and count is not None:
        raise click.UsageError("give --duration or --requests, not both")
    settings = LoadSettings(
        url=url,
        model=model,
        concurrency=concurrency,
        requests=count if count is not None or duration is not None else 200,
        duration_s=duration,
        explain=explain,
        payload=read_payload(payload) if payload else default_payload(),
        warmup_requests=warmup,
        timeout_s=timeout,
        token=find_token(url, token=token, key_file=key_file),
    )
    report = LoadRunner(settings, progress=console.progress).run()
    if as_json:
        console.json(report.to_dict())
    else:
        _render(console, report)
    if report.ok == 0:
        raise ClientError(
            f"no request to {report.url} succeeded ({_statuses(report.statuses)})",
            fix="check --url and --model-name, and that the server is running",
        )


def _render(console: Console, report: object) -> None:
    from scibert_pack.client.load_generator import LoadReport

    assert isinstance(report, LoadReport)
    r = report
    lines = [
        f"URL:          {r.url}",
        f"Concurrency:  {r.concurrency} ({r.texts_per_request} text(s) per request)",
        f"Requests:     {r.requests} in {r.elapsed_s:.2f} s, {r.ok} answered 200",
        f"Throughput:   {r.requests_per_s:.2f} req/s, {r.texts_per_s:.2f} texts/s",
        f"Latency (ms): p50 {r.p50_ms:.1f}  p90 {r.p90_ms:.1f}  p99 {r.p99_ms:.1f}  "
        f"max {r.max_ms:.1f}  mean {r.mean_ms:.1f}",
        f"Statuses:     {_statuses(r.statuses)}",
    ]
    if r.stopped_early:
        lines.append(f"Stopped:      {r.stopped_early}")
    lines += [f"Error:        {message}" for message in r.errors]
    for line in lines:
        console.data(line)


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in statuses.items()) or "none"
