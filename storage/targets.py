"""Where an upload goes: STORAGE_URI parsed once, at the edge, into one frozen target."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from scibert_pack.errors import InputError

# S3 bucket naming rules (virtual-host safe subset): 3-63 chars, lowercase, digits, dots, dashes.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# A PersistentVolumeClaim name is a DNS-1123 subdomain.
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_EXPECTED = "expected s3://bucket/prefix, pvc://claim/path or a local directory path"


@dataclass(frozen=True)
class S3Target:
    bucket: str
    # Key prefix without leading or trailing slashes; "" is the bucket root.
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class PvcTarget:
    claim: str
    # Path inside the claim without leading or trailing slashes; "" is the claim's root.
    path: str

    @property
    def uri(self) -> str:
        return f"pvc://{self.claim}/{self.path}" if self.path else f"pvc://{self.claim}"


@dataclass(frozen=True)
class LocalTarget:
    path: Path

    @property
    def uri(self) -> str:
        return str(self.path)


Target = S3Target | PvcTarget | LocalTarget


def parse_target(uri: str) -> Target:
    """The target STORAGE_URI names; InputError for an unknown scheme or a malformed name."""
    if "://" not in uri:
        if not uri.strip():
            raise InputError("STORAGE_URI is empty", fix=_EXPECTED)
        return LocalTarget(Path(uri).expanduser().absolute())
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    path = _clean_path(uri, parts.path)
    if scheme == "s3":
        if not _BUCKET.match(parts.netloc):
            raise InputError(
                f"{uri!r} names no valid S3 bucket (got {parts.netloc!r})",
                fix="bucket names are 3-63 lowercase letters, digits, dots or dashes, "
                "e.g. s3://my-models/scibert",
            )
        return S3Target(parts.netloc, path)
    if scheme == "pvc":
        if not _CLAIM.match(parts.netloc):
            raise InputError(
                f"{uri!r} names no valid PersistentVolumeClaim (got {parts.netloc!r})",
                fix="claim names are lowercase letters, digits, dots or dashes, "
                "e.g. pvc://model-store/scibert",
            )
        return PvcTarget(parts.netloc, path)
    if scheme == "file":
        return LocalTarget(Path(parts.path).absolute())
    raise InputError(
        f"unknown storage scheme {parts.scheme!r} in {uri!r}",
        fix=f"{_EXPECTED} (GCS and Azure are not supported yet)",
    )


def _clean_path(uri: str, raw: str) -> str:
    segments = [s for s in raw.split("/") if s]
    if any(s in (".", "..") for s in segments) or "//" in raw.strip("/"):
        raise InputError(
            f"{uri!r} has an empty, '.' or '..' path segment",
            fix="write the path plainly, e.g. s3://my-models/scibert",
        )
    return "/".join(segments)
