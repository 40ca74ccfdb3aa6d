"""S3 (and S3-compatible: MinIO, Ceph, moto) backend, through boto3 and its transfer manager.

Layout under s3://BUCKET/PREFIX:
  PREFIX/VERSION/<store files>        the immutable version KServe downloads (storageUri)
  PREFIX/VERSION.complete.json        the completion record, written last
The record sits beside the version prefix, not inside it: KServe's storage initializer downloads
every object under the storageUri, and the downloaded tree must equal the local store byte for
byte. It still marks completeness: a version without its record was interrupted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import ChunksizeAdjuster

from scibert_pack.errors import InputError, StorageError
from scibert_pack.layout import CONFIG_FILE, MODEL_STORE_DIR
from scibert_pack.storage.backend import ByteCallback, FileCallback, RemoteFile
from scibert_pack.storage.local_store import LocalFile, LocalStore
from scibert_pack.storage.targets import CREDENTIAL_CHAIN, S3Target, redact_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
_READ_CHUNK = MIB
# S3 refuses parts under 5 MiB (except the last) and more than 10,000 parts.
_MIN_PART = 5 * MIB
_SHA_KEY = "sha256"  # object metadata key: x-amz-meta-sha256
_NO_CHECKSUM_CONFIG: dict[str, Any] = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
# Words in an S3-compatible store's refusal of boto3's checksums (boto3 "aws-chunked is not
# supported", MinIO/Ceph/R2 refusing x-amz-checksum-* or x-amz-trailer).
_CHECKSUM_REFUSALS = ("chunked", "checksum", "trailer", "x-amz-content-sha256")
_RECORD_SUFFIX = ".complete.json"
_CREDENTIALS_FIX = f"set {CREDENTIAL_CHAIN}"


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    # Files and parts in flight at once.
    max_concurrency: int = 8
    # Files from this size go up in parts of part_size, several at once.
    multipart_threshold: int = 8 * MIB
    part_size: int = 8 * MIB
    # S3's SHA256 checksum on every PUT and part. Off (--no-checksum) for S3-compatible stores
    # that reject checksum headers or aws-chunked uploads: nothing is sent, and each object is
    # verified by its ETag (the MD5 of its bytes, or of its parts' MD5s) or, where the ETag is
    # no MD5, by reading it back.
    checksum: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrency <= 64:
            raise InputError(
                f"max concurrency must be 1 to 64, got {self.max_concurrency}",
                fix="pick a number of parallel transfers in that range, e.g. 8",
            )
        if self.part_size < _MIN_PART or self.multipart_threshold < _MIN_PART:
            raise InputError(
                f"part size and multipart threshold must be at least 5 MiB, got "
                f"{self.part_size} and {self.multipart_threshold} bytes",
                fix="S3 rejects smaller parts; use 8 MiB or more",
            )
        if self.endpoint_url is not None and not _is_http_url(self.endpoint_url):
            raise InputError(
                f"endpoint URL {redact_uri(self.endpoint_url)!r} is not an http(s) URL",
                fix="give the S3 endpoint as e.g. http://minio.local:9000",
            )


def _is_http_url(url: str) -> bool:
    """scheme://host[:port][/path], no spaces or control characters, a port that exists."""
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a port out of range or not a number
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def make_client(settings: S3Settings) -> S3Client:
    """An S3 client from boto3's usual credential chain (env, profile, SSO, instance role)."""
    try:
        session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound:
        raise InputError(
            f"AWS profile {settings.profile!r} is not configured",
            fix="list profiles with `aws configure list-profiles`, or drop --profile",
        ) from None
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        # botocore's own default adds a CRC32 to every PUT ("when_supported"); only what an
        # operation requires (DeleteObjects' checksum) is left without checksums.
        **_NO_CHECKSUM_CONFIG if not settings.checksum else {},
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


class S3Backend:
    drops_empty_files = True

    def __init__(self, client: S3Client, target: S3Target, settings: S3Settings) -> None:
        calculation = getattr(client.meta.config, "request_checksum_calculation", None)
        if not settings.checksum and calculation != "when_required":
            raise InputError(
                "S3 checksums are off, but the S3 client still adds its own to every PUT "
                "(request_checksum_calculation is not 'when_required')",
                fix="build the client with make_client(settings), or give it "
                "Config(request_checksum_calculation='when_required')",
            )
        self._client = client
        self._target = target
        self._settings = settings
        self._bucket = target.bucket

    # -- names ---------------------------------------------------------------------------------
    def _version_prefix(self, version: str) -> str:
        return f"{self._target.prefix}/{version}/" if self._target.prefix else f"{version}/"

    def _record_key(self, version: str) -> str:
        return self._version_prefix(version).rstrip("/") + _RECORD_SUFFIX

    def version_uri(self, version: str) -> str:
        # The trailing slash matters: KServe lists by prefix, and without it s3://b/m/v1 would
        # also pull s3://b/m/v10/ (kserve#3776).
        return f"s3://{self._bucket}/{self._version_prefix(version)}"

    def record_uri(self, version: str) -> str:
        return self.uri_of(self._record_key(version))

    def uri_of(self, name: str) -> str:
        return f"s3://{self._bucket}/{name}"

    def member(self, version: str, path: str) -> str:
        return self._version_prefix(version) + path

    # -- reading -------------------------------------------------------------------------------
    def check(self, store: LocalStore) -> list[str]:
        with self._errors("reach the bucket", bucket_call=True):
            self._client.head_bucket(Bucket=self._bucket)
        base = self._target.prefix
        top = f"{base}/" if base else ""
        inside = self._list(top, delimiter=True)
        if {f"{top}config/", f"{top}{MODEL_STORE_DIR}/"} & set(inside):
            raise StorageError(
                f"{self._target.uri}/ already holds an unversioned model store "
                f"({CONFIG_FILE} or {MODEL_STORE_DIR}/); an InferenceService pointing at it "
                "would also download every version uploaded beneath it",
                fix="upload to another prefix, e.g. "
                + (f"{self._target.uri}-versions" if base else f"s3://{self._bucket}/scibert")
                + ", or move the old store away",
            )
        if not base:
            return []
        siblings = [n for n in self._list(base, delimiter=True) if not n.startswith(f"{base}/")]
        if not siblings:
            return []
        shown = ", ".join(self.uri_of(n) for n in siblings[:5])
        return [
            f"{self._target.uri} has sibling prefixes ({shown}); KServe lists objects by "
            f"prefix, so a storageUri written without its trailing slash would pull them too: "
            f"use the printed storageUri exactly, ending in '/'"
        ]

    def read_version(self, version: str, files: Sequence[LocalFile]) -> dict[str, RemoteFile]:
        prefix = self._version_prefix(version)
        local = {f.path: f for f in files}
        found: dict[str, RemoteFile] = {}
        for key in self._list(prefix):
            path = key[len(prefix) :]
            head = self._head(key)
            vouched = head.get("Metadata", {}).get(_SHA_KEY)
            if path in local and self._problems(local[path], key, head):
                vouched = None  # its metadata claims a sha256 its bytes do not have
            found[path] = RemoteFile(int(head["ContentLength"]), vouched)
        return found

    def read_record(self, version: str) -> bytes | None:
        with self._errors("read the completion record"):
            try:
                reply = self._client.get_object(Bucket=self._bucket, Key=self._record_key(version))
            except botocore.exceptions.ClientError as err:
                if _code(err) in ("NoSuchKey", "404"):
                    return None
                raise
            return reply["Body"].read()

    # -- writing -------------------------------------------------------------------------------
    def put(
        self,
        version: str,
        files: Sequence[LocalFile],
        on_bytes: ByteCallback,
        on_file: FileCallback,
    ) -> None:
        prefix = self._version_prefix(version)
        with self._errors("upload"):
            self._abort_stale_multipart(prefix)
            subscriber = _BytesSubscriber(on_bytes)
            # Leaving the block on an exception cancels what is still queued or in flight.
            with create_transfer_manager(self._client, self._transfer_config()) as manager:
                futures = [
                    (
                        f,
                        manager.upload(
                            str(f.source),
                            self._bucket,
                            prefix + f.path,
                            extra_args=self._put_args(f),
                            subscribers=[subscriber],
                        ),
                    )
                    for f in files
                ]
                for file, future in futures:
                    future.result()
                    on_file(file)

    def verify(self, version: str, files: Sequence[LocalFile]) -> None:
        prefix = self._version_prefix(version)
        for f in files:
            key = prefix + f.path
            problems = self._problems(f, key, self._head(key))
            if problems:
                raise StorageError(
                    f"{self.uri_of(prefix + f.path)} does not match {f.source} after upload: "
                    f"{'; '.join(problems)}",
                    fix="rerun the upload; it replaces mismatched objects",
                )

    def _put_args(self, f: LocalFile) -> dict[str, Any]:
        args: dict[str, Any] = {"Metadata": {_SHA_KEY: f.sha256}}
        if self._settings.checksum:
            args["ChecksumAlgorithm"] = "SHA256"
        return args

    def _problems(self, f: LocalFile, key: str, head: dict[str, Any]) -> list[str]:
        """Why object `key` (its HEAD: `head`) is not `f` ([] when it is): size, the sha256 kept
        in its metadata, and its bytes (S3's SHA256 checksum, or without checksums its ETag)."""
        problems = []
        if int(head["ContentLength"]) != f.size:
            problems.append(f"size {head['ContentLength']} instead of {f.size}")
        if head.get("Metadata", {}).get(_SHA_KEY) != f.sha256:
            problems.append("sha256 metadata differs")
        if not self._settings.checksum:
            if not problems and not self._etag_matches(f, head):
                problems += self._read_back_problems(f, key)
            return problems
        # S3 computes it from the bytes it received; stores without checksums send none.
        remote_sum = head.get("ChecksumSHA256")
        if remote_sum and remote_sum.split("-")[0] != self._expected_checksum(f):
            problems.append("S3's SHA256 checksum differs from the local file")
        elif not remote_sum and any(k.startswith("Checksum") for k in head):
            problems.append("no SHA256 checksum: another writer replaced it")
        return problems

    def _etag_matches(self, f: LocalFile, head: dict[str, Any]) -> bool:
        """Whether the ETag is the MD5 S3 gives `f` as this backend uploads it: the file's MD5,
        or for a multipart upload the MD5 of its parts' MD5s, then -N."""
        etag = str(head.get("ETag", "")).strip('"')
        if f.size < self._settings.multipart_threshold:
            return etag == _md5_of(f, None)
        return etag == _md5_of(f, self._part_size(f))

    def _read_back_problems(self, f: LocalFile, key: str) -> list[str]:
        """An ETag that is no MD5 of the bytes (another writer, or a store whose ETags are not
        MD5s, e.g. encrypted objects): read the object and hash what comes back."""
        digest = hashlib.sha256()
        with self._errors(f"read back {self.uri_of(key)}"):
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(_READ_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != f.sha256:
            return ["its bytes differ from the local file (sha256 of the object read back)"]
        return []

    def commit(self, version: str, record: bytes) -> None:
        with self._errors("write the completion record"):
            self._client.put_object(
                Bucket=self._bucket,
                Key=self._record_key(version),
                Body=record,
                ContentType="application/json",
            )

    def strays(self, version: str) -> list[str]:
        base = self._target.prefix
        if not base:
            raise InputError(
                f"--delete at the root of bucket {self._bucket!r} would remove every other "
                "object in the bucket",
                fix=f"upload under a prefix, e.g. s3://{self._bucket}/scibert",
            )
        keep = self._version_prefix(version)
        record = self._record_key(version)
        return [k for k in self._list(f"{base}/") if not k.startswith(keep) and k != record]

    def delete(self, names: Sequence[str]) -> None:
        with self._errors("delete objects"):
            for start in range(0, len(names), 1000):
                batch = names[start : start + 1000]
                reply = self._client.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                if reply.get("Errors"):
                    first = reply["Errors"][0]
                    raise StorageError(
                        f"could not delete {self.uri_of(first.get('Key', '?'))}: "
                        f"{first.get('Code')} {first.get('Message')}",
                        fix="check that your credentials may s3:DeleteObject on this prefix",
                    )

    # -- helpers -------------------------------------------------------------------------------
    def _transfer_config(self) -> TransferConfig:
        s = self._settings
        return TransferConfig(
            multipart_threshold=s.multipart_threshold,
            multipart_chunksize=s.part_size,
            max_concurrency=s.max_concurrency,
        )

    def _part_size(self, f: LocalFile) -> int:
        """The part size s3transfer uses for `f` (raised so that it has at most 10,000)."""
        return int(ChunksizeAdjuster().adjust_chunksize(self._settings.part_size, f.size))

    def _expected_checksum(self, f: LocalFile) -> str:
        """S3's ChecksumSHA256 of `f` as this backend uploads it: the file's own sha256, or for a
        multipart upload the sha256 of its parts' sha256 digests."""
        if f.size < self._settings.multipart_threshold:
            return base64.b64encode(bytes.fromhex(f.sha256)).decode("ascii")
        digests, part = hashlib.sha256(), self._part_size(f)
        with f.source.open("rb") as fh:
            while chunk := fh.read(part):
                digests.update(hashlib.sha256(chunk).digest())
        return base64.b64encode(digests.digest()).decode("ascii")

    def _abort_stale_multipart(self, prefix: str) -> None:
        """Parts of an interrupted multipart upload are billed until aborted."""
        reply = self._client.list_multipart_uploads(Bucket=self._bucket, Prefix=prefix)
        for upload in reply.get("Uploads", []):
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )

    def _list(self, prefix: str, *, delimiter: bool = False) -> list[str]:
        """Keys under `prefix`; with `delimiter`, only the next level (sub-prefixes end in /)."""
        names: list[str] = []
        extra: dict[str, Any] = {"Delimiter": "/"} if delimiter else {}
        with self._errors("list objects"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix, **extra
            )
            for page in pages:
                names += [c["Prefix"] for c in page.get("CommonPrefixes", [])]
                names += [o["Key"] for o in page.get("Contents", [])]
        return sorted(names)

    def _head(self, key: str) -> dict[str, Any]:
        """HEAD of `key`, with S3's checksum unless checksums are off."""
        extra: dict[str, Any] = {"ChecksumMode": "ENABLED"} if self._settings.checksum else {}
        with self._errors(f"read {self.uri_of(key)}"):
            return dict(self._client.head_object(Bucket=self._bucket, Key=key, **extra))

    @contextlib.contextmanager
    def _errors(self, doing: str, *, bucket_call: bool = False) -> Iterator[None]:
        """botocore failures as StorageErrors that say what to do; never echo credentials."""
        endpoint = redact_uri(self._client.meta.endpoint_url)
        try:
            yield
        except botocore.exceptions.NoCredentialsError:
            raise StorageError(
                f"no AWS credentials found to {doing} in s3://{self._bucket}",
                fix=_CREDENTIALS_FIX,
            ) from None
        except botocore.exceptions.EndpointConnectionError:
            raise StorageError(
                f"cannot connect to the S3 endpoint {endpoint} to {doing}",
                fix="check --endpoint-url / AWS_ENDPOINT_URL and that the server is up",
            ) from None
        except botocore.exceptions.ClientError as err:
            code = _code(err)
            if code == "NoSuchBucket" or (code == "404" and bucket_call):
                raise StorageError(
                    f"bucket {self._bucket!r} does not exist at {endpoint}",
                    fix="rerun the upload with --create-bucket to create it, or check the name",
                ) from err
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
                raise StorageError(
                    f"S3 at {endpoint} rejected the credentials ({code}) to {doing}",
                    fix=_CREDENTIALS_FIX,
                ) from err
            if self._settings.checksum and _refuses_checksums(err):
                raise StorageError(
                    f"S3 at {endpoint} refused the upload's checksums to {doing} in "
                    f"s3://{self._bucket} ({code}: {_error_message(err)})",
                    fix="this S3-compatible store does not take boto3's checksum headers or "
                    "aws-chunked uploads: rerun with --no-checksum (objects are then verified "
                    "by their ETag, the MD5 of their bytes)",
                ) from err
            if code in ("403", "AccessDenied", "Forbidden"):
                raise StorageError(
                    f"access denied to {doing} in s3://{self._bucket} at {endpoint}",
                    fix="use credentials allowed s3:ListBucket, s3:GetObject, s3:PutObject "
                    "(and s3:DeleteObject for --delete) on this bucket",
                ) from err
            raise StorageError(
                f"S3 at {endpoint} failed to {doing} in s3://{self._bucket}: {code}",
                fix="rerun; an interrupted upload resumes where it stopped",
            ) from err
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(
                f"S3 at {endpoint} failed to {doing} in s3://{self._bucket}: {type(err).__name__}",
                fix="rerun; an interrupted upload resumes where it stopped",
            ) from err

    def create_bucket(self) -> bool:
        """Make the bucket if it is missing (`upload --create-bucket`); True when it was made.
        Outside us-east-1, S3 wants the client's region as the bucket's location."""
        with self._errors("reach the bucket", bucket_call=True):
            try:
                self._client.head_bucket(Bucket=self._bucket)
                return False
            except botocore.exceptions.ClientError as err:
                if _code(err) not in ("404", "NoSuchBucket"):
                    raise
        region = self._client.meta.region_name
        where: Any = {} if region in (None, "", "us-east-1") else {"LocationConstraint": region}
        with self._errors(f"create the bucket {self._bucket!r}"):
            try:
                if where:
                    self._client.create_bucket(Bucket=self._bucket, CreateBucketConfiguration=where)
                else:
                    self._client.create_bucket(Bucket=self._bucket)
            except botocore.exceptions.ClientError as err:
                if _code(err) != "BucketAlreadyExists":
                    raise
                raise StorageError(
                    f"bucket name {self._bucket!r} is taken by another account "
                    "(S3 bucket names are global)",
                    fix="upload to a bucket of your own: pick another name",
                ) from err
        return True


class _BytesSubscriber(BaseSubscriber):  # type: ignore[misc]
    def __init__(self, on_bytes: ByteCallback) -> None:
        self._on_bytes = on_bytes

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._on_bytes(bytes_transferred)


def _code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", "unknown"))


def _error_message(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Message", ""))[:200]


def _refuses_checksums(err: botocore.exceptions.ClientError) -> bool:
    if _code(err) not in ("InvalidArgument", "InvalidRequest", "NotImplemented", "400", "501"):
        return False
    said = f"{_code(err)} {_error_message(err)}".lower()
    return any(word in said for word in _CHECKSUM_REFUSALS)


def _md5_of(f: LocalFile, part_size: int | None) -> str:
    """The ETag S3 gives `f`: its MD5, or with parts of `part_size` the MD5 of the parts' MD5
    digests followed by -<number of parts>."""
    if part_size is None:
        whole = hashlib.md5(usedforsecurity=False)
        with f.source.open("rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                whole.update(chunk)
        return whole.hexdigest()
    digests, parts = hashlib.md5(usedforsecurity=False), 0
    with f.source.open("rb") as fh:
        while chunk := fh.read(part_size):
            digests.update(hashlib.md5(chunk, usedforsecurity=False).digest())
            parts += 1
    return f"{digests.hexdigest()}-{parts}"
