"""`scibert-pack upload OUT STORAGE_URI`: the storageUri on stdout, progress on stderr."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from scibert_pack import api
from scibert_pack.cli._console import Console
from scibert_pack.cli._interrupt import EXIT_INTERRUPTED, stop_within
from scibert_pack.storage.kubectl_steps import kubectl_steps, upload_steps_text
from scibert_pack.storage.local_store import scan_store
from scibert_pack.storage.sync import (
    UploadPlan,
    UploadProgress,
    plan_json,
    result_json,
)
from scibert_pack.storage.targets import PvcTarget, S3Target, parse_target

# These libraries log request headers (the access key id among them) at DEBUG level.
_CHATTY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
# Exit code when no --pvc-mount was given: the steps are printed, nothing was copied.
EXIT_STEPS_ONLY = 3
# Seconds Ctrl-C waits for transfers in flight to stop in order before the command quits.
INTERRUPT_GRACE_S = 5.0


@click.command("upload")
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("storage_uri")
@click.option(
    "--endpoint-url",
    envvar="AWS_ENDPOINT_URL",
    help="S3-compatible endpoint (MinIO, Ceph...). Default: AWS_ENDPOINT_URL, else AWS S3.",
)
@click.option("--region", help="S3 region. Default: AWS_REGION / AWS_DEFAULT_REGION / profile.")
@click.option("--profile", help="AWS profile from ~/.aws. Default: AWS_PROFILE or the chain.")
@click.option(
    "--pvc-mount",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the claim of a pvc:// URI is mounted on this machine. Without it, the kubectl "
    "steps are printed instead.",
)
@click.option(
    "--delete",
    is_flag=True,
    help="After the upload, remove everything under the prefix that is not this version "
    "(older versions too: InferenceServices still using them lose them).",
)
@click.option("--dry-run", is_flag=True, help="List what would happen; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON record instead of the URI.")
@click.option(
    "--max-concurrency",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Parallel S3 transfers (files and parts).",
)
@click.option(
    "--no-checksum",
    is_flag=True,
    help="S3: send no SHA256 checksums, for S3-compatible stores that reject checksum headers "
    "or aws-chunked uploads; each object is then verified by its ETag (MD5), or read back.",
)
@click.option(
    "--create-bucket",
    is_flag=True,
    help="S3: create the bucket first if it does not exist (in the client's region; not with "
    "--dry-run).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def upload(
    out: Path,
    storage_uri: str,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
    pvc_mount: Path | None,
    delete: bool,
    dry_run: bool,
    as_json: bool,
    max_concurrency: int,
    no_checksum: bool,
    create_bucket: bool,
    quiet: bool,
) -> None:
    """Upload model store OUT to STORAGE_URI as an immutable, verified version.

    STORAGE_URI is s3://bucket/prefix, pvc://claim/path or a local directory. The store goes to
    its own version under it (named by model version and content hash), a completion record is
    written last, and the version's storageUri is printed only once it is complete. Rerunning
    an interrupted upload resumes it file by file (a file cut off midway, parts of a multipart
    object included, is sent again whole); rerunning a finished one transfers nothing.

    For pvc:// without --pvc-mount, nothing is copied: the kubectl steps that copy the store
    with the same guarantees are printed (with --json, as a record with complete: false), and
    the exit code is 3.
    """
    _quiet_chatty_loggers()
    console = Console(quiet=quiet)
    target = parse_target(storage_uri)
    if create_bucket and not isinstance(target, S3Target):
        raise click.UsageError(f"--create-bucket is for s3:// URIs, not {storage_uri!r}")
    if isinstance(target, PvcTarget) and pvc_mount is None:
        copy = kubectl_steps(scan_store(out), target)
        for warning in copy.warnings:
            console.warn(warning)
        if delete:
            console.warn(
                "--delete is not part of the kubectl steps: once the new version is in use, "
                f"remove older ones under {target.uri} in the copy pod, or rerun with "
                "--pvc-mount DIR --delete"
            )
        if as_json:
            console.json(copy.to_json())
        else:
            console.data(upload_steps_text(copy, target).rstrip("\n"))
        console.warn(
            f"nothing was copied to {target.uri}: no --pvc-mount; run the steps above, or "
            "mount the claim here and rerun with --pvc-mount DIR"
        )
        raise click.exceptions.Exit(EXIT_STEPS_ONLY)
    s3_settings = None
    if isinstance(target, S3Target):
        from scibert_pack.storage.s3 import S3Settings

        s3_settings = S3Settings(
            endpoint_url=endpoint_url or None,
            region=region,
            profile=profile,
            max_concurrency=max_concurrency,
            checksum=not no_checksum,
        )
    planned = api.plan_upload(
        out,
        storage_uri,
        s3=s3_settings,
        pvc_mount=pvc_mount,
        delete=delete,
        create_bucket=create_bucket and not dry_run,
        progress=console.progress,
    )
    plan, backend = planned.plan, planned.backend
    for warning in plan.warnings:
        console.warn(warning)
    if dry_run:
        if as_json:
            console.json({**plan_json(plan, backend), "dry_run": True})
        else:
            console.data(_plan_text(plan, backend.uri_of))
        return
    bar = _ProgressLine(quiet=quiet)

    def interrupted() -> None:
        bar.close()
        console.warn(
            f"interrupted: the version under {target.uri} is not complete, and nothing serves "
            "it (its storageUri is printed only once it is); rerun the same command to resume "
            "(files already sent are not sent again)"
        )

    try:
        with stop_within(INTERRUPT_GRACE_S, interrupted):
            result = planned.run(bar)
    except KeyboardInterrupt:
        interrupted()
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    finally:
        bar.close()
    unchanged = len(plan.files) - len(result.uploaded)
    console.progress(
        f"uploaded {len(result.uploaded)} files ({_size(result.bytes_transferred)}), "
        f"{unchanged} unchanged, {len(result.deleted) + len(plan.extras)} deleted; "
        f"completion record {plan.record_uri}"
    )
    if as_json:
        console.json(result_json(result, backend))
    else:
        console.data(plan.storage_uri)


def _plan_text(plan: UploadPlan, uri_of: Callable[[str], str]) -> str:
    rows = [
        f"{'upload' if p.action == 'upload' else 'unchanged':<9}  {_size(p.file.size):>10}  "
        f"{plan.storage_uri.rstrip('/')}/{p.file.path}"
        for p in plan.files
    ]
    rows += [f"{'delete':<9}  {'':>10}  {uri_of(n)}" for n in (*plan.extras, *plan.strays)]
    rows.append(f"storageUri once uploaded: {plan.storage_uri}")
    return "\n".join(rows)


def _quiet_chatty_loggers() -> None:
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))


class _ProgressLine:
    """Bytes and files on one stderr line: redrawn in place on a terminal, one line per file
    otherwise (logs stay readable)."""

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
        self._tty = sys.stderr.isatty()
        self._last_draw = 0.0
        self._files_shown = -1
        self._drawn = False

    def __call__(self, p: UploadProgress) -> None:
        if self._quiet or p.files_total == 0:
            return
        line = (
            f"uploading {_size(p.bytes_done)} / {_size(p.bytes_total)}, "
            f"{p.files_done} / {p.files_total} files"
        )
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or p.files_done == p.files_total:
                click.echo(f"\r{line}\x1b[K", nl=False, err=True)
                self._last_draw, self._drawn = now, True
        elif p.files_done != self._files_shown:
            click.echo(line, err=True)
            self._files_shown = p.files_done

    def close(self) -> None:
        if self._drawn:
            click.echo("", err=True)
            self._drawn = False


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
