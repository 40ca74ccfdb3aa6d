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
# How boto3 finds credentials, as the fix of every message about them.
CREDENTIAL_CHAIN = (
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile from ~/.aws/credentials "
    "with --profile or AWS_PROFILE (see `aws configure`)"
)


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


def redact_uri(uri: str) -> str:
    """`uri` fit for a message: a user:password@ part shown as ***@, a query or fragment as ?...
    or #... (a presigned query is a credential too). Every URI a message quotes goes through
    here."""
    if "://" not in uri:
        return uri
    head, rest = uri.split("://", 1)
    end = _userinfo_end(rest)
    mask = "***@" if end >= 0 else ""
    rest = rest[end + 1 :]
    for mark in ("?", "#"):
        if mark in rest:
            rest = rest[: rest.index(mark)] + mark + "..."
    return f"{head}://{mask}{rest}"


def has_userinfo(uri: str) -> bool:
    """True when `uri` carries a user[:password]@ part (access key and secret, usually)."""
    return "://" in uri and _userinfo_end(uri.split("://", 1)[1]) >= 0


def _userinfo_end(rest: str) -> int:
    """Index of the '@' closing a user[:password] part of `rest` (the URI after scheme://), or
    -1. An AWS secret may hold '/', so `key:se/cret@bucket` counts too, while a key prefix with
    an '@' (`bucket/team@corp/m`) does not: bucket and claim names have no ':'."""
    at = rest.find("@")
    if at < 0:
        return -1
    slash, colon = rest.find("/"), rest.find(":")
    if slash < 0 or at < slash or 0 <= colon < min(slash, at):
        return at
    return -1


def parse_target(uri: str) -> Target:
    """The target STORAGE_URI names; InputError for an unknown scheme, a malformed name or
    credentials written into the URI. Messages quote the URI redacted, never its userinfo."""
    if "://" not in uri:
        if not uri.strip():
            raise InputError("STORAGE_URI is empty", fix=_EXPECTED)
        return LocalTarget(Path(uri).expanduser().absolute())
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    shown = redact_uri(uri)
    if has_userinfo(uri):
        if scheme == "s3":
            fix = f"remove them and let boto3's credential chain find them: set {CREDENTIAL_CHAIN}"
        else:
            fix = f"remove them: a {scheme}:// URI takes no credentials"
        raise InputError(
            f"{shown!r} carries credentials (the part before '@'); a URI ends up in shell "
            "history, logs and manifests, so keys never go there",
            fix=fix,
        )
    if "?" in uri or "#" in uri:
        raise InputError(
            f"{shown!r} has a query or fragment ('?' or '#'), which a storage URI does not take",
            fix="drop it: KServe's storage initializer cuts a storageUri at '?' or '#' as well",
        )
    path = _clean_path(shown, parts.path)
    if scheme == "s3":
        if not _BUCKET.fullmatch(parts.netloc):
            raise InputError(
                f"{shown!r} names no valid S3 bucket (got {parts.netloc!r})",
                fix="bucket names are 3-63 lowercase letters, digits, dots or dashes, "
                "e.g. s3://my-models/scibert",
            )
        return S3Target(parts.netloc, path)
    if scheme == "pvc":
        if not _CLAIM.fullmatch(parts.netloc):
            raise InputError(
                f"{shown!r} names no valid PersistentVolumeClaim (got {parts.netloc!r})",
                fix="claim names are lowercase letters, digits, dots or dashes, "
                "e.g. pvc://model-store/scibert",
            )
        return PvcTarget(parts.netloc, path)
    if scheme == "file":
        return LocalTarget(Path(parts.path).absolute())
    raise InputError(
        f"unknown storage scheme {parts.scheme!r} in {shown!r}",
        fix=f"{_EXPECTED} (GCS and Azure are not supported yet)",
    )


def _clean_path(shown: str, raw: str) -> str:
    segments = [s for s in raw.split("/") if s]
    if any(s in (".", "..") for s in segments) or "//" in raw.strip("/"):
        raise InputError(
            f"{shown!r} has an empty, '.' or '..' path segment",
            fix="write the path plainly, e.g. s3://my-models/scibert",
        )
    return "/".join(segments)
