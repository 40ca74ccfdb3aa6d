"""`scibert-pack upload` end to end: moto on 127.0.0.1, KServe's downloader, a killed upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from s3_helpers import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    S3Server,
    StallingProxy,
    kserve_download,
    s3_environ,
    tree,
)

from scibert_pack.cli import cli
from scibert_pack.storage.local_store import read_store

pytest_plugins = ["s3_fixtures"]
CLI = [str(Path(sys.executable).parent / "scibert-pack")]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["upload", *args], catch_exceptions=False)


@pytest.mark.s3
def test_prints_only_the_storage_uri_and_reruns_transfer_nothing(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    version = read_store(store).version
    uri = f"s3://{bucket}/models/scibert/{version}/"

    first = run(str(store), f"s3://{bucket}/models/scibert")

    assert (first.exit_code, first.stdout) == (0, uri + "\n")
    assert "3 / 3 files" in first.stderr
    assert kserve_download(first.stdout.strip(), tmp_path / "dl") == tree(store)

    second = run(str(store), f"s3://{bucket}/models/scibert/")

    assert (second.exit_code, second.stdout) == (0, uri + "\n")
    assert second.stderr == (
        "uploaded 0 files (0 B), 3 unchanged, 0 deleted; completion record "
        f"s3://{bucket}/models/scibert/{version}.complete.json\n"
    )


@pytest.mark.s3
def test_json_record_lists_every_object(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    local = read_store(store)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the flag alone must do

    result = run(str(store), f"s3://{bucket}/m", "--endpoint-url", s3_env.endpoint, "--json", "-q")

    assert (result.exit_code, result.stderr) == (0, "")
    record = json.loads(result.stdout)
    prefix = f"s3://{bucket}/m/{local.version}/"
    assert record["storage_uri"] == prefix
    assert record["complete"] is True
    assert record["objects"] == [
        {
            "path": f.path,
            "uri": prefix + f.path,
            "size": f.size,
            "sha256": f.sha256,
            "action": "uploaded",
        }
        for f in local.files
    ]
    assert record["transferred"] == {"files": 3, "bytes": local.total_bytes}


@pytest.mark.s3
def test_dry_run_lists_and_writes_nothing(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    local = read_store(store)
    s3_env.client().put_object(Bucket=bucket, Key="m/old.txt", Body=b"old")

    result = run(str(store), f"s3://{bucket}/m", "--dry-run", "--delete")

    prefix = f"s3://{bucket}/m/{local.version}/"
    size = {f.path: f"{f.size} B" for f in local.files}
    assert result.exit_code == 0
    assert result.stdout == (
        f"upload     {size['build-report.json']:>10}  {prefix}build-report.json\n"
        f"upload     {size['config/config.properties']:>10}  {prefix}config/config.properties\n"
        f"upload     {size['model-store/scibert.mar']:>10}  {prefix}model-store/scibert.mar\n"
        f"delete                 s3://{bucket}/m/old.txt\n"
        f"storageUri once uploaded: {prefix}\n"
    )
    as_json = json.loads(
        run(str(store), f"s3://{bucket}/m", "--dry-run", "--delete", "--json").stdout
    )
    assert (as_json["dry_run"], as_json["remove"]) == (True, [f"s3://{bucket}/m/old.txt"])
    assert [o["action"] for o in as_json["objects"]] == ["upload"] * 3
    assert s3_env.keys(bucket) == ["m/old.txt"]


def test_pvc_without_mount_prints_the_kubectl_steps(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    version = read_store(store).version

    result = run(str(store), "pvc://model-claim/scibert")

    assert result.exit_code == 3
    assert result.stdout.startswith("# No --pvc-mount given: nothing was copied.")
    assert f"# pvc://model-claim/scibert/{version}\n" in result.stdout
    assert result.stderr == (
        "Warning: nothing was copied to pvc://model-claim/scibert: no --pvc-mount; run the "
        "steps above, or mount the claim here and rerun with --pvc-mount DIR\n"
    )


def test_pvc_with_mount_prints_the_pvc_uri(make_store: Callable[..., Path], tmp_path: Path) -> None:
    store = make_store()
    version = read_store(store).version
    (tmp_path / "mnt").mkdir()

    result = run(str(store), "pvc://model-claim/scibert", "--pvc-mount", str(tmp_path / "mnt"))

    assert (result.exit_code, result.stdout) == (0, f"pvc://model-claim/scibert/{version}\n")
    assert tree(tmp_path / "mnt" / "scibert" / version) == tree(store)


@pytest.mark.s3
@pytest.mark.parametrize(
    ("case", "exit_code", "message"),
    [
        (
            "unknown-scheme",
            2,
            "Error: unknown storage scheme 'gs' in 'gs://{bucket}/m'; expected "
            "s3://bucket/prefix, pvc://claim/path or a local directory path (GCS and Azure are "
            "not supported yet)\n",
        ),
        (
            "missing-bucket",
            1,
            "Error: bucket 'no-such-bucket' does not exist at {endpoint}; create it with "
            "`aws s3 mb s3://no-such-bucket --endpoint-url {endpoint}` or check the name\n",
        ),
        (
            "no-credentials",
            1,
            "Error: no AWS credentials found to reach the bucket in s3://{bucket}; set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile from "
            "~/.aws/credentials with --profile or AWS_PROFILE (see `aws configure`)\n",
        ),
        (
            "no-config",
            2,
            "Error: model store {store} has no config/config.properties; point OUT at the "
            "folder `scibert-pack build MODEL_DIR OUT` wrote, or rebuild it\n",
        ),
        (
            "no-mar",
            2,
            "Error: model store {store} has no model archive in model-store/ (looked for *.mar, "
            "*.tar.gz or a model folder); point OUT at the folder `scibert-pack build MODEL_DIR "
            "OUT` wrote, or rebuild it\n",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and "Error" not in v else None,
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    exit_code: int,
    message: str,
) -> None:
    store = make_store(model_version=None)
    uri = f"s3://{bucket}/m"
    if case == "unknown-scheme":
        uri = f"gs://{bucket}/m"
    elif case == "missing-bucket":
        uri = "s3://no-such-bucket/m"
    elif case == "no-credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    elif case == "no-config":
        (store / "config" / "config.properties").unlink()
    elif case == "no-mar":
        (store / "model-store" / "scibert.mar").unlink()

    result = CliRunner().invoke(cli, ["upload", str(store), uri])

    assert (result.exit_code, result.stdout) == (exit_code, "")
    assert result.stderr == message.format(bucket=bucket, endpoint=s3_env.endpoint, store=store)
    assert s3_env.keys(bucket) == []


@pytest.mark.s3
def test_credentials_never_reach_output_or_storage(
    moto_server: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    env = s3_environ(moto_server.endpoint, tmp_path)

    done = subprocess.run(
        [*CLI, "-vv", "upload", str(store), f"s3://{bucket}/m", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr.decode()
    assert b"INFO botocore" in done.stderr  # -vv reached the AWS libraries
    stored = b"".join(
        moto_server.client().get_object(Bucket=bucket, Key=k)["Body"].read()
        for k in moto_server.keys(bucket)
    )
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert secret.encode() not in done.stdout + done.stderr + stored


@pytest.mark.s3
def test_upload_killed_midway_serves_nothing_partial_and_rerun_completes(
    moto_server: S3Server,
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    tmp_path: Path,
) -> None:
    v1 = make_store("v1", model_version="1.0")
    served = run(str(v1), f"s3://{bucket}/m").stdout.strip()
    v2 = make_store("v2", model_version="2.0", payload=os.urandom(3 * 1024 * 1024))
    version = read_store(v2).version
    env = s3_environ(moto_server.endpoint, tmp_path)
    port = int(moto_server.endpoint.rsplit(":", 1)[1])

    # The proxy passes 1 MiB of requests, then holds every byte: the .mar upload (3 MiB) hangs
    # halfway, and the process is killed there.
    with StallingProxy(port, limit=1024 * 1024) as proxy:
        proc = subprocess.Popen(
            [
                *CLI,
                "upload",
                str(v2),
                f"s3://{bucket}/m",
                "--max-concurrency",
                "1",
                "--endpoint-url",
                f"http://127.0.0.1:{proxy.port}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proxy.stalled.wait(timeout=60), "the upload never got 1 MiB far"
        finally:
            proc.kill()
            stdout, _ = proc.communicate(timeout=10)
    assert (proc.returncode, stdout) == (-9, b"")  # killed before any storageUri was printed

    # The .mar did not land, and config goes last anyway (a version without it is not even
    # startable by TorchServe). The small report may or may not have landed: s3transfer submits
    # files from several threads, so which PUT reaches the stalled proxy first is not fixed.
    landed = moto_server.keys(bucket, f"m/{version}/")
    assert set(landed) <= {f"m/{version}/build-report.json"}
    assert f"m/{version}.complete.json" not in moto_server.keys(bucket)
    assert kserve_download(served, tmp_path / "still-v1") == tree(v1)

    rerun = run(str(v2), f"s3://{bucket}/m", "--json", "-q")

    record = json.loads(rerun.stdout)
    assert {o["path"]: o["action"] for o in record["objects"]} == {
        "build-report.json": "unchanged" if landed else "uploaded",
        "config/config.properties": "uploaded",
        "model-store/scibert.mar": "uploaded",
    }
    assert kserve_download(record["storage_uri"], tmp_path / "v2") == tree(v2)
