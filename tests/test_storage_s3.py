"""The S3 backend against a real S3-protocol server (moto) and KServe's own downloader."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from s3_helpers import S3Server, kserve_download, tree

from scibert_pack.errors import InputError, StorageError, StoreError
from scibert_pack.storage.local_store import LocalFile, read_store
from scibert_pack.storage.s3 import MIB, S3Backend, S3Settings
from scibert_pack.storage.sync import UploadResult, plan_upload, run_upload
from scibert_pack.storage.targets import S3Target, parse_target

pytest_plugins = ["s3_fixtures"]
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
    return run_upload(plan_upload(read_store(store), b, delete=delete), b, **kwargs)


def test_upload_is_what_kserve_downloads_byte_for_byte(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    local = read_store(store)
    result = upload(store, backend(s3_env, f"s3://{bucket}/models/scibert"))

    assert result.plan.storage_uri == f"s3://{bucket}/models/scibert/{local.version}/"
    assert local.version.startswith("1.0-") and len(local.version) == len("1.0-") + 12
    assert kserve_download(result.plan.storage_uri, tmp_path / "dl") == tree(store)
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
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store(payload=bytes(range(256)) * (48 * 1024))  # 12 MiB: 3 parts of 5 MiB
    counting = CountingClient(s3_env)
    settings = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB, "max_concurrency": 4}
    result = upload(store, backend(s3_env, f"s3://{bucket}/big", counting.client, **settings))

    assert counting.calls["UploadPart"] == 3
    assert kserve_download(result.plan.storage_uri, tmp_path / "dl") == tree(store)


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
    new = read_store(v2)
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
    assert kserve_download(result.plan.storage_uri, tmp_path / "v2") == tree(v2)


def test_object_changed_in_storage_is_uploaded_again(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    first = upload(store, backend(s3_env, f"s3://{bucket}/m"))
    key = f"m/{read_store(store).version}/model-store/scibert.mar"
    s3_env.client().put_object(Bucket=bucket, Key=key, Body=b"tampered")

    again = upload(store, backend(s3_env, f"s3://{bucket}/m"))

    assert again.uploaded == ("model-store/scibert.mar",)
    assert kserve_download(first.plan.storage_uri, tmp_path / "dl") == tree(store)


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
    tmp_path: Path,
) -> None:
    store = make_store()
    version = read_store(store).version

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
    assert kserve_download(rerun.plan.storage_uri, tmp_path / "dl") == tree(store)


def test_delete_removes_older_versions_after_the_new_one_is_complete(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/m"
    upload(make_store("v1", model_version="1.0"), backend(s3_env, uri))
    s3_env.client().put_object(Bucket=bucket, Key="m/notes.txt", Body=b"stray")
    s3_env.client().put_object(Bucket=bucket, Key="m-other/keep.txt", Body=b"sibling")
    v2 = make_store("v2", model_version="2.0", payload=b"v2")
    version = read_store(v2).version

    plan = plan_upload(read_store(v2), backend(s3_env, uri), delete=True)
    assert len(plan.strays) == 5  # v1's 3 files + its record + notes.txt
    assert len(s3_env.keys(bucket)) == 6  # a plan writes and deletes nothing

    result = run_upload(plan, backend(s3_env, uri))

    assert s3_env.keys(bucket) == sorted(
        [f"m/{version}/{p}" for p in tree(v2)] + [f"m/{version}.complete.json", "m-other/keep.txt"]
    )
    assert len(result.deleted) == 5
    assert kserve_download(result.plan.storage_uri, tmp_path / "dl") == tree(v2)


def test_files_in_the_version_that_the_store_lacks_need_delete(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    version = read_store(store).version
    s3_env.client().put_object(Bucket=bucket, Key=f"m/{version}/extra.bin", Body=b"?")

    with pytest.raises(StorageError) as err:
        plan_upload(read_store(store), backend(s3_env, f"s3://{bucket}/m"))
    assert str(err.value) == (
        f"s3://{bucket}/m/{version}/ holds files the store does not have: "
        f"s3://{bucket}/m/{version}/extra.bin; KServe would download them too; "
        "rerun with --delete to remove them"
    )

    result = upload(store, backend(s3_env, f"s3://{bucket}/m"), delete=True)
    assert kserve_download(result.plan.storage_uri, tmp_path / "dl") == tree(store)


def test_sibling_prefixes_are_a_warning_with_the_fix(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    s3_env.client().put_object(Bucket=bucket, Key="models/scibert-v10/x", Body=b"1")
    plan = plan_upload(read_store(make_store()), backend(s3_env, f"s3://{bucket}/models/scibert"))
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
        plan_upload(read_store(make_store()), backend(s3_env, f"s3://{bucket}{prefix}"))
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
        plan_upload(read_store(store), backend(s3_env, f"s3://{bucket}/m"))
    assert str(err.value) == (
        f"model store {store} has empty files: config/log4j2.xml; KServe's storage initializer "
        "skips 0-byte objects, so the served model would lack them; "
        "give them content or remove them from the store, then rerun"
    )
    assert s3_env.keys(bucket) == []


def test_missing_bucket_names_the_fix(s3_env: S3Server, make_store: Callable[..., Path]) -> None:
    with pytest.raises(StorageError) as err:
        plan_upload(read_store(make_store()), backend(s3_env, "s3://nope-missing/m"))
    endpoint = s3_env.endpoint
    assert str(err.value) == (
        f"bucket 'nope-missing' does not exist at {endpoint}; create it with "
        f"`aws s3 mb s3://nope-missing --endpoint-url {endpoint}` or check the name"
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
        plan_upload(read_store(make_store()), b)
    assert str(err.value) == (
        f"no AWS credentials found to reach the bucket in s3://{bucket}; set AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY, or name a profile from ~/.aws/credentials with --profile "
        "or AWS_PROFILE (see `aws configure`)"
    )


def test_delete_at_the_bucket_root_is_refused(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    with pytest.raises(InputError, match=r"--delete at the root of bucket"):
        plan_upload(read_store(make_store()), backend(s3_env, f"s3://{bucket}"), delete=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"part_size": MIB}, r"part size and multipart threshold must be at least 5 MiB"),
        ({"max_concurrency": 0}, r"max concurrency must be 1 to 64, got 0"),
        ({"endpoint_url": "127.0.0.1:9000"}, r"endpoint URL '127.0.0.1:9000' is not an http"),
    ],
    ids=["tiny-parts", "no-concurrency", "endpoint-without-scheme"],
)
def test_bad_s3_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        S3Settings(**settings)
