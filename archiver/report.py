"""The build report: every artifact with its sha256 and the settings used (no timestamps)."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from scibert_pack import __version__
from scibert_pack.archiver.model_folder import ModelFolder
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.files import atomic_write_text, sha256_file
from scibert_pack.handlers.settings import HandlerSettings
from scibert_pack.layout import REPORT_SCHEMA

_DISTRIBUTIONS = {
    "torch": "torch",
    "transformers": "transformers",
    "captum": "captum",
    "torchserve": "torchserve",
    "torch_model_archiver": "torch-model-archiver",
}


def build_report(
    *,
    settings: BuildSettings,
    handler: HandlerSettings,
    folder: ModelFolder,
    archive: Path,
    config_file: Path,
    archive_rel: str,
    config_rel: str,
) -> dict[str, Any]:
    artifacts = [*_artifact_entries(archive, archive_rel), _entry(config_file, config_rel)]
    archive_digest, archive_size = _digest_of(archive, artifacts, archive_rel)
    return {
        "schema": REPORT_SCHEMA,
        "model_name": settings.name,
        "model_version": settings.version,
        "profile": settings.profile,
        "archive": {
            "path": archive_rel,
            "format": settings.archive_format,
            "sha256": archive_digest,
            "size": archive_size,
        },
        "artifacts": sorted(artifacts, key=lambda a: str(a["path"])),
        "settings": {
            "archive_format": settings.archive_format,
            "server": {
                "batch_size": settings.batch_size,
                "max_batch_delay_ms": settings.max_batch_delay_ms,
                "min_workers": settings.min_workers,
                "max_workers": settings.max_workers,
                "response_timeout_s": settings.response_timeout_s,
                "startup_timeout_s": settings.startup_timeout_s,
                "netty_threads": settings.netty_threads,
                "job_queue_size": settings.job_queue_size,
                "max_request_bytes": settings.max_request_bytes,
            },
            "handler": handler.to_mapping(),
        },
        "ports": settings.ports.as_dict(),
        "token_auth": settings.token_auth,
        "model": {
            "architecture": folder.architecture,
            "model_type": folder.model_type,
            "labels": list(folder.labels),
            "max_length": handler.max_length,
            "files": list(folder.files),
        },
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    found = {"scibert_pack": __version__, "python": platform.python_version()}
    for key, dist in _DISTRIBUTIONS.items():
        try:
            found[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[key] = "not installed"
    return found


def write_report(path: Path, report: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True) + "\n")


def _entry(path: Path, rel: str) -> dict[str, Any]:
    return {"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size}


def _artifact_entries(archive: Path, archive_rel: str) -> list[dict[str, Any]]:
    if archive.is_file():
        return [_entry(archive, archive_rel)]
    return [  # no-archive: a folder, each file its own artifact
        _entry(f, f"{archive_rel}/{f.relative_to(archive).as_posix()}")
        for f in sorted(archive.rglob("*"))
        if f.is_file()
    ]


def _digest_of(archive: Path, artifacts: list[dict[str, Any]], rel: str) -> tuple[str, int]:
    if archive.is_file():
        return str(artifacts[0]["sha256"]), int(artifacts[0]["size"])
    # A folder's digest: over the sorted (path, sha256) lines of its files.
    lines = sorted(f"{a['path']} {a['sha256']}" for a in artifacts if a["path"].startswith(rel))
    size = sum(int(a["size"]) for a in artifacts if a["path"].startswith(rel))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), size
