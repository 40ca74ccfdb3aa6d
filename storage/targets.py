"""Where an upload goes: STORAGE_URI parsed once, at the edge, into one frozen target."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from scibert_pack.errors import InputError

# S3 bucket naming rules (virtual-host safe subset): lowercase, digits, dots, dashes, at most 63
# (AWS wants 3 at least; its own answer says so for shorter ones).
_BUCKET = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")
# GCS also takes underscores, and up to 222 characters for names with dots.
_GCS_BUCKET = re.compile(r"[a-z0-9]([a-z0-9._-]{0,220}[a-z0-9])?")
# A PersistentVolumeClaim name is a DNS-1123 subdomain.
_CLAIM = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
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


@dataclass(frozen=True)
class StorageUri:
    """A checked scheme://name/path storage URI: `scheme` lowercase, `name` the bucket, claim
    or host, `path` without leading or trailing slashes."""

    scheme: str
    name: str
    path: str


# Characters no storage URI of ours needs and that change what it names further down the line:
# '%' (decoded by some tools into '/' or '..'), '\\' (a separator on other systems).
_FORBIDDEN = {"%": "a percent-escape", "\\": "a backslash"}
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?")


def check_storage_uri(
    uri: str,
    *,
    schemes: tuple[str, ...],
    label: str = "",
    credentials_fix: str | None = None,
    scheme_fix: str | None = None,
) -> StorageUri:
    """The one validator of scheme://... storage URIs, for `upload` and `manifest` alike.

    Refused, each with its own message: credentials, a query or fragment (a presigned URL),
    control characters or whitespace (CR/LF), non-ASCII, percent-escapes and backslashes, an
    empty, '.' or '..' path segment, a scheme not in `schemes` and a malformed bucket, claim or
    host name. `label` starts each message (e.g. "--storage-uri "); the URI is quoted redacted.
    """
    shown = redact_uri(uri)
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if has_userinfo(uri):
        if credentials_fix is None and scheme.lower() == "s3":
            credentials_fix = (
                f"remove them and let boto3's credential chain find them: set {CREDENTIAL_CHAIN}"
            )
        raise InputError(
            f"{label}{shown!r} carries credentials (the part before '@'); a URI ends up in shell "
            "history, logs and manifests, so keys never go there",
            fix=credentials_fix or f"remove them: a {scheme.lower()}:// URI takes no credentials",
        )
    if "?" in uri or "#" in uri:
        raise InputError(
            f"{label}{shown!r} has a query or fragment ('?' or '#'), which a storage URI does "
            "not take",
            fix="drop it: KServe's storage initializer cuts a storageUri at '?' or '#' as well "
            "(a presigned https:// URL expires and is a credential: upload the store and give "
            "its s3:// or pvc:// storageUri)",
        )
    for index, char in enumerate(uri):
        if not char.isprintable() or char.isspace():
            raise InputError(
                f"{label}{shown!r} holds a control character or whitespace ({char!r} at "
                f"position {index})",
                fix="write the URI on one line with no spaces, tabs or line breaks",
            )
        if not char.isascii():
            raise InputError(
                f"{label}{shown!r} holds a non-ASCII character ({char!r} at position {index})",
                fix="use ASCII letters, digits, '-', '_', '.' and '/' in bucket, claim and "
                "folder names",
            )
        if char in _FORBIDDEN:
            raise InputError(
                f"{label}{shown!r} holds {_FORBIDDEN[char]} ({char!r} at position {index}), "
                "which tools read differently",
                fix="write the path plainly with '/' between plain names, e.g. "
                "s3://my-models/scibert",
            )
    parts = urlsplit(uri)
    if scheme not in schemes:
        names = ", ".join(f"{s}://" for s in schemes)
        hint = " (in lowercase)" if scheme.lower() in schemes else ""
        raise InputError(
            f"{label}unknown storage scheme {scheme!r} in {shown!r}",
            fix=scheme_fix or f"expected one of {names}{hint}",
        )
    bucket = {
        "s3": (_BUCKET, "S3", "dots or dashes, up to 63"),
        "gs": (_GCS_BUCKET, "GCS", "dots, dashes or underscores"),
    }
    if scheme in bucket and not bucket[scheme][0].fullmatch(parts.netloc):
        _, kind, chars = bucket[scheme]
        raise InputError(
            f"{label}{shown!r} names no valid {kind} bucket (got {parts.netloc!r})",
            fix=f"bucket names are lowercase letters, digits, {chars}, "
            f"e.g. {scheme}://my-models/scibert",
        )
    if scheme == "pvc" and not _CLAIM.fullmatch(parts.netloc):
        raise InputError(
            f"{label}{shown!r} names no valid PersistentVolumeClaim (got {parts.netloc!r})",
            fix="claim names are lowercase letters, digits, dots or dashes, "
            "e.g. pvc://model-store/scibert",
        )
    if scheme not in ("s3", "gs", "pvc", "file") and not _HOST.fullmatch(parts.netloc):
        raise InputError(
            f"{label}{shown!r} names no valid host (got {parts.netloc!r})",
            fix=f"e.g. {scheme}://models.example.com/scibert/",
        )
    return StorageUri(scheme, parts.netloc, _clean_path(label, shown, parts.path))


UPLOAD_SCHEMES = ("s3", "pvc")


def parse_target(uri: str) -> Target:
    """The target STORAGE_URI names; InputError for an unknown scheme, a malformed name or
    credentials written into the URI (check_storage_uri). Messages quote the URI redacted."""
    if "://" not in uri:
        if not uri.strip():
            raise InputError("STORAGE_URI is empty", fix=_EXPECTED)
        _refuse_mistyped_scheme(uri)
        # abspath, not resolve: `..` goes, a link the user named stays what they named.
        return LocalTarget(Path(os.path.abspath(Path(uri).expanduser())))
    if uri.split("://", 1)[0].lower() == "file":
        return LocalTarget(Path(os.path.abspath(urlsplit(uri).path)))
    checked = check_storage_uri(
        uri, schemes=UPLOAD_SCHEMES, scheme_fix=f"{_EXPECTED} (GCS and Azure are not supported yet)"
    )
    if checked.scheme == "s3":
        return S3Target(checked.name, checked.path)
    return PvcTarget(checked.name, checked.path)


def _refuse_mistyped_scheme(uri: str) -> None:
    """`s3:/bucket/x` or `s3:bucket` is a typo for a URI, not a local folder named `s3:`."""
    scheme, colon, rest = uri.partition(":")
    if colon and scheme.lower() in (*UPLOAD_SCHEMES, "gs", "file", "https", "http"):
        meant = redact_uri(f"{scheme}://{rest.lstrip('/')}")
        raise InputError(
            f"STORAGE_URI {meant.replace('://', ':/', 1)!r} looks like a {scheme}:// URI with "
            "a slash missing, not a local folder",
            fix=f"write {meant!r} (or ./{scheme}:... if you really mean a local folder)",
        )


def _clean_path(label: str, shown: str, raw: str) -> str:
    segments = raw.split("/")[1:] if raw.startswith("/") else raw.split("/")
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash: a folder
    if any(s in ("", ".", "..") for s in segments):
        raise InputError(
            f"{label}{shown!r} has an empty, '.' or '..' path segment",
            fix="write the path plainly, e.g. s3://my-models/scibert",
        )
    return "/".join(segments)
