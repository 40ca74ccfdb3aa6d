"""The S3 backend against a real S3-protocol server (moto) and KServe's own downloader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from support.s3_stores_and_proxies import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    S3Server,
    StallingProxy,
    kserve_download,
    s3_environ,
    tree,
)

from scibert_pack.errors import InputError, StorageError, StoreError
from scibert_pack.storage.local_store import LocalFile, scan_store
from scibert_pack.storage.s3 import MIB, S3Backend, S3Settings, make_client
from scibert_pack.storage.sync import UploadResult, plan_upload, run_upload
from scibert_pack.storage.targets import S3Target, parse_target

pytest_plugins = ["support.s3_fixtures"]
pytestmark = pytest.mark.s3
_WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")


class CountingClient:
    """A real client whose write calls are counted (botocore's event hooks, no patching)."""

    def __init__(self, server: S3Server) -> None:
        self.client = server.client()
        self.calls: Counter[str] = Counter()
        self.client.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **kwargs: Any) -> None:
        self.calls[model.name] += 1

    @property
    def writes(self) -> int:
        return sum(self.calls[name] for name in _WRITES)


def backend(server: S3Server, uri: str, client: Any = None, **settings: Any) -> S3Backend:
    target = parse_target(uri)
    assert isinstance(target, S3Target)
    return S3Backend(client or server.client(), target, S3Settings(**settings))


def upload(store: Path, b: S3Backend, *, delete: bool = False, **kwargs: Any) -> UploadResult:
    """Plan and run an upload; once it returns (the version is published), KServe's downloader
    fetches the storageUri and the tree must equal the store byte for byte."""
    result = run_upload(plan_upload(scan_store(store), b, delete=delete), b, **kwargs)
    with tempfile.TemporaryDirectory() as dest:
        assert kserve_download(result.plan.storage_uri, Path(dest)) == tree(store)
    return result


def test_upload_is_what_kserve_downloads_byte_for_byte(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    local = scan_store(store)
    result = upload(store, backend(s3_env, f"s3://{bucket}/models/scibert"))

    assert result.plan.storage_uri == f"s3://{bucket}/models/scibert/{local.version}/"
    assert local.version.startswith("1.0-") and len(local.version) == len("1.0-") + 12
    # The completion record sits beside the version prefix, so the download above lacks it.
    record = s3_env.client().get_object(
        Bucket=bucket, Key=f"models/scibert/{local.version}.complete.json"
    )
    body = json.loads(record["Body"].read())
    assert body["storage_uri"] == result.plan.storage_uri
    assert {f["path"]: f["sha256"] for f in body["files"]} == {
        f.path: f.sha256 for f in local.files
    }
    assert sorted(result.uploaded) == sorted(tree(store))


def test_second_upload_transfers_nothing(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    first = CountingClient(s3_env)
    upload(store, backend(s3_env, f"s3://{bucket}/m", first.client))
    assert first.calls["PutObject"] == 4  # 3 files + the completion record

    second = CountingClient(s3_env)
    result = upload(store, backend(s3_env, f"s3://{bucket}/m", second.client))

    assert (result.uploaded, result.bytes_transferred, second.writes) == ((), 0, 0)
    assert second.calls["HeadObject"] > 0  # every object was still checked


def test_large_archive_goes_up_in_parallel_parts_and_is_verified(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store(payload=bytes(range(256)) * (48 * 1024))  # 12 MiB: 3 parts of 5 MiB
    counting = CountingClient(s3_env)
    settings = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB, "max_concurrency": 4}
    result = upload(store, backend(s3_env, f"s3://{bucket}/big", counting.client, **settings))

    assert counting.calls["UploadPart"] == 3
    assert result.plan.storage_uri.endswith("/")


def test_progress_counts_every_byte_and_file(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    seen: list[Any] = []
    upload(store, backend(s3_env, f"s3://{bucket}/p"), on_progress=seen.append)
    last = seen[-1]
    total = sum(len(b) for b in tree(store).values())
    assert (last.bytes_done, last.bytes_total, last.files_done, last.files_total) == (
        total,
        total,
        3,
        3,
    )


class Interrupt(Exception):
    pass


def stop_after(n: int) -> Callable[[LocalFile], None]:
    landed: list[str] = []

    def on_object(f: LocalFile) -> None:
        landed.append(f.path)
        if len(landed) >= n:
            raise Interrupt(f"stopped after {landed}")

    return on_object


def test_interrupted_upload_never_serves_a_partial_version_and_resumes(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/models/scibert"
    v1 = make_store("v1", model_version="1.0")
    served = upload(v1, backend(s3_env, uri)).plan.storage_uri
    v2 = make_store("v2", model_version="2.0", payload=b"new weights" * 1000)
    new = scan_store(v2)
    version_prefix = f"models/scibert/{new.version}/"

    with pytest.raises(Interrupt):
        upload(v2, backend(s3_env, uri, max_concurrency=1), on_object=stop_after(1))

    landed = [k.removeprefix(version_prefix) for k in s3_env.keys(bucket, version_prefix)]
    assert landed and "config/config.properties" not in landed  # not startable by TorchServe
    assert f"models/scibert/{new.version}.complete.json" not in s3_env.keys(bucket)
    # The storageUri the user has is still the whole, unchanged first version.
    assert kserve_download(served, tmp_path / "v1") == tree(v1)

    counting = CountingClient(s3_env)
    result = upload(v2, backend(s3_env, uri, counting.client))

    assert sorted(result.uploaded) == sorted(set(tree(v2)) - set(landed))
    assert counting.calls["PutObject"] == len(result.uploaded) + 1  # + the record


def test_object_changed_in_storage_is_uploaded_again(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    first = upload(store, backend(s3_env, f"s3://{bucket}/m"))
    key = f"m/{scan_store(store).version}/model-store/scibert.mar"
    s3_env.client().put_object(Bucket=bucket, Key=key, Body=b"tampered")

    again = upload(store, backend(s3_env, f"s3://{bucket}/m"))

    assert again.uploaded == ("model-store/scibert.mar",)
    assert again.plan.storage_uri == first.plan.storage_uri


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({}, "no SHA256 checksum: another writer replaced it"),
        ({"ChecksumAlgorithm": "SHA256"}, "S3's SHA256 checksum differs from the local file"),
    ],
    ids=["other-writer-default-checksum", "other-writer-sha256-checksum"],
)
def test_object_replaced_during_upload_fails_verification(
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    extra: dict[str, str],
    problem: str,
) -> None:
    store = make_store()
    version = scan_store(store).version

    def replace(f: LocalFile) -> None:  # another writer races us: same size and metadata
        if f.path == "build-report.json":
            s3_env.client().put_object(
                Bucket=bucket,
                Key=f"m/{version}/{f.path}",
                Body=b"x" * f.size,
                Metadata={"sha256": f.sha256},
                **extra,
            )

    with pytest.raises(StorageError) as err:
        upload(store, backend(s3_env, f"s3://{bucket}/m", max_concurrency=1), on_object=replace)
    assert str(err.value) == (
        f"s3://{bucket}/m/{version}/build-report.json does not match "
        f"{store / 'build-report.json'} after upload: {problem}; "
        "rerun the upload; it replaces mismatched objects"
    )
    assert f"m/{version}.complete.json" not in s3_env.keys(bucket)

    rerun = upload(store, backend(s3_env, f"s3://{bucket}/m"))
    assert rerun.uploaded == ("build-report.json",)


@pytest.mark.parametrize("checksum", [True, False], ids=["sha256-checksum", "no-checksum"])
def test_a_local_file_rewritten_in_place_during_upload_is_never_marked_complete(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], checksum: bool
) -> None:
    """`cp` over the archive while it goes up: the object holds bytes of neither version, and
    S3's checksum of them matches the local file as it is now, so only the sha256 taken when
    the upload started can tell."""
    store = make_store()
    version = scan_store(store).version
    archive = store / "model-store" / "scibert.mar"

    def rewrite(f: LocalFile) -> None:
        with archive.open("r+b") as fh:  # same file, same size, other bytes
            fh.seek(-4, os.SEEK_END)
            fh.write(b"\xff" * 4)

    client = None if checksum else PickyStore(s3_env, checksum=False).client
    b = backend(s3_env, f"s3://{bucket}/m", client, checksum=checksum, max_concurrency=1)
    with pytest.raises(StorageError) as err:
        upload(store, b, on_object=rewrite)
    message = str(err.value)
    assert message.startswith(f"{archive} changed while it was being uploaded (sha256 "), message
    assert message.endswith(
        "now); the version was not marked complete; rerun `scibert-pack upload` once nothing "
        "writes to the store (is a build still writing into it?)"
    ), message
    assert f"m/{version}.complete.json" not in s3_env.keys(bucket)


def test_delete_removes_older_versions_after_the_new_one_is_complete(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/m"
    upload(make_store("v1", model_version="1.0"), backend(s3_env, uri))
    s3_env.client().put_object(Bucket=bucket, Key="m/notes.txt", Body=b"stray")
    s3_env.client().put_object(Bucket=bucket, Key="m-other/keep.txt", Body=b"sibling")
    v2 = make_store("v2", model_version="2.0", payload=b"v2")
    version = scan_store(v2).version

    plan = plan_upload(scan_store(v2), backend(s3_env, uri), delete=True)
    assert len(plan.strays) == 5  # v1's 3 files + its record + notes.txt
    assert len(s3_env.keys(bucket)) == 6  # a plan writes and deletes nothing

    result = run_upload(plan, backend(s3_env, uri))
    assert kserve_download(result.plan.storage_uri, tmp_path / "dl") == tree(v2)

    assert s3_env.keys(bucket) == sorted(
        [f"m/{version}/{p}" for p in tree(v2)] + [f"m/{version}.complete.json", "m-other/keep.txt"]
    )
    assert len(result.deleted) == 5


def test_files_in_the_version_that_the_store_lacks_need_delete(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    version = scan_store(store).version
    s3_env.client().put_object(Bucket=bucket, Key=f"m/{version}/extra.bin", Body=b"?")

    with pytest.raises(StorageError) as err:
        plan_upload(scan_store(store), backend(s3_env, f"s3://{bucket}/m"))
    assert str(err.value) == (
        f"s3://{bucket}/m/{version}/ holds files the store does not have: "
        f"s3://{bucket}/m/{version}/extra.bin; KServe would download them too; "
        "rerun with --delete to remove them"
    )

    result = upload(store, backend(s3_env, f"s3://{bucket}/m"), delete=True)
    assert result.deleted == () and len(result.plan.extras) == 1


def test_sibling_prefixes_are_a_warning_with_the_fix(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    s3_env.client().put_object(Bucket=bucket, Key="models/scibert-v10/x", Body=b"1")
    plan = plan_upload(scan_store(make_store()), backend(s3_env, f"s3://{bucket}/models/scibert"))
    assert plan.warnings == (
        f"s3://{bucket}/models/scibert has sibling prefixes (s3://{bucket}/models/scibert-v10/); "
        "KServe lists objects by prefix, so a storageUri written without its trailing slash "
        "would pull them too: use the printed storageUri exactly, ending in '/'",
    )


@pytest.mark.parametrize(
    ("key", "prefix", "instead"),
    [
        ("m/config/config.properties", "/m", "/m-versions"),
        ("model-store/scibert.mar", "", "/scibert"),
    ],
    ids=["under-prefix", "bucket-root"],
)
def test_prefix_holding_an_unversioned_store_is_refused(
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    key: str,
    prefix: str,
    instead: str,
) -> None:
    s3_env.client().put_object(Bucket=bucket, Key=key, Body=b"x=1")
    with pytest.raises(StorageError) as err:
        plan_upload(scan_store(make_store()), backend(s3_env, f"s3://{bucket}{prefix}"))
    assert str(err.value) == (
        f"s3://{bucket}{prefix}/ already holds an unversioned model store "
        "(config/config.properties or model-store/); an InferenceService pointing at it would "
        "also download every version uploaded beneath it; upload to another prefix, e.g. "
        f"s3://{bucket}{instead}, or move the old store away"
    )


def test_empty_files_are_refused_before_anything_is_written(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store(model_version=None)
    (store / "config" / "log4j2.xml").write_bytes(b"")
    with pytest.raises(StoreError) as err:
        plan_upload(scan_store(store), backend(s3_env, f"s3://{bucket}/m"))
    assert str(err.value) == (
        f"model store {store} has empty files: config/log4j2.xml; KServe's storage initializer "
        "skips 0-byte objects, so the served model would lack them; "
        "give them content or remove them from the store, then rerun"
    )
    assert s3_env.keys(bucket) == []


def test_missing_bucket_names_the_fix(s3_env: S3Server, make_store: Callable[..., Path]) -> None:
    with pytest.raises(StorageError) as err:
        plan_upload(scan_store(make_store()), backend(s3_env, "s3://nope-missing/m"))
    endpoint = s3_env.endpoint
    assert str(err.value) == (
        f"bucket 'nope-missing' does not exist at {endpoint}; rerun the upload with "
        "--create-bucket to create it, or check the name"
    )


def test_no_credentials_names_the_variables(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    from scibert_pack.storage.s3 import make_client

    settings = S3Settings(endpoint_url=s3_env.endpoint)
    b = S3Backend(make_client(settings), S3Target(bucket, "m"), settings)
    with pytest.raises(StorageError) as err:
        plan_upload(scan_store(make_store()), b)
    assert str(err.value) == (
        f"no AWS credentials found to reach the bucket in s3://{bucket}; set AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY, or name a profile from ~/.aws/credentials with --profile "
        "or AWS_PROFILE (see `aws configure`)"
    )


def test_delete_at_the_bucket_root_is_refused(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    with pytest.raises(InputError, match=r"--delete at the root of bucket"):
        plan_upload(scan_store(make_store()), backend(s3_env, f"s3://{bucket}"), delete=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"part_size": MIB}, r"part size and multipart threshold must be at least 5 MiB"),
        ({"max_concurrency": 0}, r"max concurrency must be 1 to 64, got 0"),
        ({"endpoint_url": "127.0.0.1:9000"}, r"endpoint URL '127.0.0.1:9000' is not an http"),
        (
            {"endpoint_url": "http://127.0.0.1:9000\n"},
            r"endpoint URL 'http://127.0.0.1:9000\\n' is not an http\(s\) URL; give the S3 endpoint",
        ),
        ({"endpoint_url": "http://[::1"}, r"endpoint URL 'http://\[::1' is not an http"),
        ({"endpoint_url": "http://127.0.0.1:99999"}, r"endpoint URL 'http://127.0.0.1:99999' is"),
        ({"endpoint_url": "http://127.0.0.1:9000 "}, r"endpoint URL 'http://127.0.0.1:9000 ' is"),
    ],
    ids=[
        "tiny-parts",
        "no-concurrency",
        "endpoint-without-scheme",
        "endpoint-with-a-newline",
        "endpoint-unclosed-ipv6",
        "endpoint-port-out-of-range",
        "endpoint-trailing-space",
    ],
)
def test_bad_s3_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        S3Settings(**settings)


# --- an upload killed in the middle of a multipart object ------------------------------------

_UPLOAD_WITH_SMALL_PARTS = """
import sys
from pathlib import Path

from scibert_pack.storage.local_store import scan_store
from scibert_pack.storage.backend_choice import backend_for
from scibert_pack.storage.s3 import MIB, S3Settings
from scibert_pack.storage.sync import plan_upload, run_upload
from scibert_pack.storage.targets import parse_target

store, uri, endpoint = sys.argv[1:]
settings = S3Settings(
    endpoint_url=endpoint, multipart_threshold=5 * MIB, part_size=5 * MIB, max_concurrency=1
)
backend = backend_for(parse_target(uri), s3_settings=settings)
plan = plan_upload(scan_store(Path(store)), backend)
run_upload(plan, backend)
print(plan.storage_uri)
"""


def _wait_for_parts(server: S3Server, bucket: str, prefix: str, timeout: float = 30) -> int:
    """Parts stored so far of the one multipart upload under `prefix` (0 if none by then)."""
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pending in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get(
            "Uploads", []
        ):
            parts = client.list_parts(
                Bucket=bucket, Key=pending["Key"], UploadId=pending["UploadId"]
            ).get("Parts", [])
            if parts:
                return len(parts)
        time.sleep(0.2)
    return 0


def test_multipart_upload_killed_midway_is_never_served_and_rerun_completes(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    """5 MiB parts of a 12 MiB archive (3 parts); the proxy lets 8 MiB of requests through, so
    the process dies with part 1 stored and part 2 half sent. Resume is per file: the rerun
    aborts the stale multipart upload and sends all 3 parts again."""
    uri = f"s3://{bucket}/m"
    v1 = make_store("v1", model_version="1.0")
    served = upload(v1, backend(s3_env, uri)).plan.storage_uri
    v2 = make_store("v2", model_version="2.0", payload=os.urandom(12 * MIB))
    version = scan_store(v2).version
    prefix = f"m/{version}/"
    port = int(s3_env.endpoint.rsplit(":", 1)[1])

    with StallingProxy(port, limit=8 * MIB) as proxy:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _UPLOAD_WITH_SMALL_PARTS,
                str(v2),
                uri,
                f"http://127.0.0.1:{proxy.port}",
            ],
            env=s3_environ(s3_env.endpoint, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proxy.stalled.wait(timeout=60), "the upload never got 8 MiB far"
            stored_parts = _wait_for_parts(s3_env, bucket, prefix)
        finally:
            proc.kill()
            stdout, stderr = proc.communicate(timeout=10)
    assert (proc.returncode, stdout) == (-9, b""), stderr.decode()  # no storageUri printed
    assert stored_parts == 1, "not killed in the middle of the multipart upload"

    keys = s3_env.keys(bucket)
    assert f"{prefix}model-store/scibert.mar" not in keys
    assert f"{prefix}config/config.properties" not in keys
    assert f"m/{version}.complete.json" not in keys
    assert kserve_download(served, tmp_path / "v1") == tree(v1)

    counting = CountingClient(s3_env)
    settings = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB, "max_concurrency": 2}
    result = upload(v2, backend(s3_env, uri, counting.client, **settings))  # downloads it, too

    assert counting.calls["AbortMultipartUpload"] == 1  # the stale one: its parts are not kept
    assert counting.calls["UploadPart"] == 3  # every part of the cut-off file, again
    assert "model-store/scibert.mar" in result.uploaded
    assert s3_env.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# --- --no-checksum: S3-compatible stores that refuse boto3's checksums -------------------------

_CHECKED_UPLOADS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
_REFUSAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidArgument</Code><Message>'
    b"aws-chunked encoding is not supported with the specified x-amz-content-sha256 value"
    b"</Message></Error>"
)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **kwargs: Any) -> Any:
        yield self._data


class PickyStore(CountingClient):
    """A client to a store that refuses any upload request carrying a checksum header or an
    aws-chunked body, as some S3-compatible stores do (botocore's events, no patching); with
    `etag_not_md5`, the store's ETags are not the MD5 of the bytes (as for encrypted objects)."""

    def __init__(self, server: S3Server, *, checksum: bool, etag_not_md5: bool = False) -> None:
        config = None if checksum else Config(**_NO_CHECKSUM)
        self.client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=config,
        )
        self.calls = Counter()
        self.client.meta.events.register("before-call.s3", self._count)
        for operation in _CHECKED_UPLOADS:
            self.client.meta.events.register(f"before-send.s3.{operation}", self._refuse)
        if etag_not_md5:
            self.client.meta.events.register("after-call.s3.HeadObject", self._other_etag)

    @staticmethod
    def _refuse(request: Any, **kwargs: Any) -> AWSResponse | None:
        headers = {k.lower(): str(v) for k, v in request.headers.items()}
        if any(
            k.startswith(("x-amz-checksum-", "x-amz-sdk-checksum", "x-amz-trailer"))
            for k in headers
        ) or "aws-chunked" in headers.get("content-encoding", ""):
            return AWSResponse(request.url, 400, {}, _Body(_REFUSAL))
        return None

    @staticmethod
    def _other_etag(parsed: dict[str, Any], **kwargs: Any) -> None:
        parsed["ETag"] = '"' + "0" * 32 + '"'


_NO_CHECKSUM = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
_SMALL_PARTS = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB}


def test_store_refusing_checksums_names_the_no_checksum_fix(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    picky = PickyStore(s3_env, checksum=True)
    with pytest.raises(StorageError) as err:
        upload(make_store(), backend(s3_env, f"s3://{bucket}/m", picky.client))
    assert str(err.value) == (
        f"S3 at {s3_env.endpoint} refused the upload's checksums to upload in s3://{bucket} "
        "(InvalidArgument: aws-chunked encoding is not supported with the specified "
        "x-amz-content-sha256 value); this S3-compatible store does not take boto3's checksum "
        "headers or aws-chunked uploads: rerun with --no-checksum (objects are then verified "
        "by their ETag, the MD5 of their bytes)"
    )
    assert not [k for k in s3_env.keys(bucket) if k.endswith(".complete.json")]


@pytest.mark.parametrize(
    ("payload_mib", "etag_not_md5", "parts", "read_back"),
    [
        (0, False, 0, 0),
        (12, False, 3, 0),
        (0, True, 0, 3),
        (12, True, 3, 3),
    ],
    ids=["single-part", "multipart", "single-part-etag-not-md5", "multipart-etag-not-md5"],
)
def test_no_checksum_uploads_to_a_store_refusing_checksums_and_verifies(
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    payload_mib: int,
    etag_not_md5: bool,
    parts: int,
    read_back: int,
) -> None:
    """Verified by ETag (the MD5, or the MD5 of the parts' MD5s); where the ETag is no MD5, by
    reading each object back. A second run transfers nothing and, with MD5 ETags, reads nothing."""
    store = make_store(payload=os.urandom(payload_mib * MIB) if payload_mib else b"w" * 700)
    picky = PickyStore(s3_env, checksum=False, etag_not_md5=etag_not_md5)
    settings = {**_SMALL_PARTS, "checksum": False}

    result = upload(store, backend(s3_env, f"s3://{bucket}/m", picky.client, **settings))

    assert picky.calls["UploadPart"] == parts
    # The completion record looked for while planning, then what verify() reads back.
    assert picky.calls["GetObject"] == 1 + read_back
    assert len(result.uploaded) == 3
    again = PickyStore(s3_env, checksum=False, etag_not_md5=etag_not_md5)
    rerun = upload(store, backend(s3_env, f"s3://{bucket}/m", again.client, **settings))
    assert (rerun.uploaded, again.writes) == ((), 0)
    # Planning and verifying each read every object back when the ETag cannot vouch.
    assert again.calls["GetObject"] == 2 * read_back + 1  # + the completion record


def test_no_checksum_catches_an_object_replaced_during_upload(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    version = scan_store(store).version

    def replace(f: LocalFile) -> None:  # same size, same sha256 metadata, other bytes
        if f.path == "build-report.json":
            s3_env.client().put_object(
                Bucket=bucket,
                Key=f"m/{version}/{f.path}",
                Body=b"x" * f.size,
                Metadata={"sha256": f.sha256},
            )

    picky = PickyStore(s3_env, checksum=False)
    b = backend(s3_env, f"s3://{bucket}/m", picky.client, checksum=False, max_concurrency=1)
    with pytest.raises(StorageError) as err:
        upload(store, b, on_object=replace)
    assert str(err.value) == (
        f"s3://{bucket}/m/{version}/build-report.json does not match "
        f"{store / 'build-report.json'} after upload: its bytes differ from the local file "
        "(sha256 of the object read back); rerun the upload; it replaces mismatched objects"
    )
    assert f"m/{version}.complete.json" not in s3_env.keys(bucket)

    rerun = upload(
        store,
        backend(
            s3_env, f"s3://{bucket}/m", PickyStore(s3_env, checksum=False).client, checksum=False
        ),
    )
    assert rerun.uploaded == ("build-report.json",)


def test_no_checksum_needs_a_client_that_sends_none(s3_env: S3Server, bucket: str) -> None:
    with pytest.raises(InputError) as err:
        backend(s3_env, f"s3://{bucket}/m", checksum=False)  # a default client: CRC32 on PUT
    assert str(err.value) == (
        "S3 checksums are off, but the S3 client still adds its own to every PUT "
        "(request_checksum_calculation is not 'when_required'); build the client with "
        "make_client(settings), or give it Config(request_checksum_calculation='when_required')"
    )
    settings = S3Settings(endpoint_url=s3_env.endpoint, checksum=False)
    S3Backend(make_client(settings), S3Target(bucket, "m"), settings)  # what the CLI does
