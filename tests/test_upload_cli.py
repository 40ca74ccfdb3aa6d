"""`scibert-pack upload` end to end: moto on 127.0.0.1, KServe's downloader, a killed upload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.s3_stores_and_proxies import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    S3Server,
    StallingProxy,
    kserve_download,
    s3_environ,
    tree,
)

from scibert_pack.cli import cli
from scibert_pack.storage.kubectl_steps import kubectl_steps, upload_steps_text
from scibert_pack.storage.local_store import scan_store
from scibert_pack.storage.targets import PvcTarget

pytest_plugins = ["support.s3_fixtures"]
CLI = [str(Path(sys.executable).parent / "scibert-pack")]


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """`scibert-pack upload ARGS` (with `env` changes: None unsets); when it publishes an S3
    version, KServe's downloader fetches the printed storageUri and the tree must equal the
    store (args[0]) byte for byte."""
    result = CliRunner().invoke(cli, ["upload", *args], env=env, catch_exceptions=False)
    if result.exit_code == 0 and "--dry-run" not in args and args[1].startswith("s3://"):
        assert_served(result.stdout, Path(args[0]), as_json="--json" in args)
    return result


def assert_served(stdout: str | bytes, store: Path, *, as_json: bool) -> str:
    """The storageUri `upload` printed, after checking KServe downloads exactly `store` from it."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    uri = json.loads(text)["storage_uri"] if as_json else text.strip()
    with tempfile.TemporaryDirectory() as dest:
        assert kserve_download(uri, Path(dest)) == tree(store)
    return str(uri)


@pytest.mark.s3
def test_prints_only_the_storage_uri_and_reruns_transfer_nothing(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    version = scan_store(store).version
    uri = f"s3://{bucket}/models/scibert/{version}/"

    first = run(str(store), f"s3://{bucket}/models/scibert")

    assert (first.exit_code, first.stdout) == (0, uri + "\n")
    assert "3 / 3 files" in first.stderr

    second = run(str(store), f"s3://{bucket}/models/scibert/")

    assert (second.exit_code, second.stdout) == (0, uri + "\n")
    assert second.stderr == (
        "uploaded 0 files (0 B), 3 unchanged, 0 deleted; completion record "
        f"s3://{bucket}/models/scibert/{version}.complete.json\n"
    )


@pytest.mark.s3
def test_json_record_lists_every_object(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    local = scan_store(store)

    result = run(
        str(store),
        f"s3://{bucket}/m",
        "--endpoint-url",
        s3_env.endpoint,
        "--json",
        "-q",
        env={"AWS_ENDPOINT_URL": None},  # the flag alone must do
    )

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
    local = scan_store(store)
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


_NOT_COPIED = (
    "Warning: nothing was copied to pvc://model-claim/scibert: no --pvc-mount; run the "
    "steps above, or mount the claim here and rerun with --pvc-mount DIR\n"
)


def test_pvc_without_mount_prints_the_kubectl_steps(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    target = PvcTarget("model-claim", "scibert")
    version = scan_store(store).version

    result = run(str(store), "pvc://model-claim/scibert")

    assert result.exit_code == 3
    assert result.stdout == upload_steps_text(kubectl_steps(scan_store(store), target), target)
    assert result.stdout.startswith("# No --pvc-mount given: nothing was copied.")
    assert result.stdout.endswith(f"\n# pvc://model-claim/scibert/{version}/\n")
    assert result.stderr == _NOT_COPIED


def test_pvc_without_mount_json_is_a_record_of_the_steps(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    (store / "config" / "log4j2.xml").write_bytes(b"")
    local = scan_store(store)
    copy = kubectl_steps(local, PvcTarget("model-claim", "scibert"))
    folder = f"pvc://model-claim/scibert/{local.version}"
    uri = f"{folder}/"  # a folder: a trailing slash

    result = run(str(store), "pvc://model-claim/scibert", "--json")

    assert result.exit_code == 3
    record = json.loads(result.stdout)
    assert record == {
        "storage_uri": uri,
        "record_uri": f"{folder}.complete.json",
        "version": local.version,
        "tree_sha256": local.tree_sha256,
        "complete": False,
        "steps": [{"title": s.title, "command": s.command} for s in copy.steps],
        "objects": [
            {"path": f.path, "uri": f"{folder}/{f.path}", "size": f.size, "sha256": f.sha256}
            for f in local.files
        ],
        "warnings": list(copy.warnings),
    }
    empty = (
        f"model store {store} has empty files: config/log4j2.xml; {uri} keeps them, but "
        "KServe's S3 downloader skips 0-byte objects, so the same store served from S3 would "
        "lack them (and `scibert-pack upload` to S3 refuses it): give them content or remove "
        "them if the model needs them"
    )
    assert record["warnings"] == [empty]
    assert result.stderr == f"Warning: {empty}\n" + _NOT_COPIED


def test_pvc_without_mount_says_delete_is_not_done(make_store: Callable[..., Path]) -> None:
    result = run(str(make_store()), "pvc://model-claim/scibert", "--delete")
    assert result.exit_code == 3
    assert result.stderr == (
        "Warning: --delete is not part of the kubectl steps: once the new version is in use, "
        "remove older ones under pvc://model-claim/scibert in the copy pod, or rerun with "
        "--pvc-mount DIR --delete\n" + _NOT_COPIED
    )


@pytest.mark.parametrize(
    "destination",
    ["{out}/versions", "{out}", "{out}/.."],
    ids=["inside-out", "out-itself", "around-out"],
)
def test_local_destination_nested_with_the_store_is_refused(
    make_store: Callable[..., Path], tmp_path: Path, destination: str
) -> None:
    store = make_store()
    before = tree(tmp_path)

    result = run(str(store), destination.format(out=store))

    assert (result.exit_code, result.stdout) == (2, "")
    nested = "is inside the destination" if destination.endswith("..") else "model store"
    assert result.stderr.startswith("Error: ") and nested in result.stderr
    assert tree(tmp_path) == before


def test_second_upload_into_the_store_never_publishes_the_first(
    make_store: Callable[..., Path],
) -> None:
    """The audit's case: `upload out out/versions`, twice. Both runs are refused."""
    store = make_store()
    for _ in range(2):
        result = run(str(store), str(store / "versions"))
        assert result.exit_code == 2
        assert result.stderr == (
            f"Error: destination {store / 'versions'} is inside the model store {store}: the "
            "next upload of that store would publish a version holding this one; upload to a "
            f"folder outside {store}, e.g. {store}-versions\n"
        )
    assert not (store / "versions").exists()


def test_pvc_with_mount_prints_the_pvc_uri(make_store: Callable[..., Path], tmp_path: Path) -> None:
    store = make_store()
    version = scan_store(store).version
    (tmp_path / "mnt").mkdir()

    result = run(str(store), "pvc://model-claim/scibert", "--pvc-mount", str(tmp_path / "mnt"))

    assert (result.exit_code, result.stdout) == (0, f"pvc://model-claim/scibert/{version}/\n")
    assert tree(tmp_path / "mnt" / "scibert" / version) == tree(store)


def test_pvc_with_mount_warns_about_empty_files(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store(model_version=None)
    (store / "config" / "log4j2.xml").write_bytes(b"")
    version = scan_store(store).version
    (tmp_path / "mnt").mkdir()

    result = run(str(store), "pvc://model-claim/scibert", "--pvc-mount", str(tmp_path / "mnt"))

    assert (result.exit_code, result.stdout) == (0, f"pvc://model-claim/scibert/{version}/\n")
    assert result.stderr.startswith(
        f"Warning: model store {store} has empty files: config/log4j2.xml; "
        f"pvc://model-claim/scibert/{version}/ keeps them, but KServe's S3 downloader skips "
        "0-byte objects"
    )
    assert tree(tmp_path / "mnt" / "scibert" / version)["config/log4j2.xml"] == b""


@pytest.mark.s3
def test_no_checksum_uploads_and_verifies_by_etag(
    s3_env: S3Server, bucket: str, make_store: Callable[..., Path]
) -> None:
    store = make_store()
    first = run(str(store), f"s3://{bucket}/m", "--no-checksum", "--json", "-q")
    assert first.exit_code == 0, first.stderr
    again = run(str(store), f"s3://{bucket}/m", "--no-checksum", "--json", "-q")
    assert json.loads(again.stdout)["transferred"] == {"files": 0, "bytes": 0}
    head = s3_env.client().head_object(
        Bucket=bucket,
        Key=f"m/{scan_store(store).version}/model-store/scibert.mar",
        ChecksumMode="ENABLED",
    )
    assert not [k for k in head if k.startswith("Checksum")]  # no checksum was sent


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
            "Error: bucket 'no-such-bucket' does not exist at {endpoint}; rerun the upload with "
            "--create-bucket to create it, or check the name\n",
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
            "folder `scibert-pack build MODEL_DIR --model-name NAME -o OUT` wrote, or rebuild "
            "it\n",
        ),
        (
            "no-mar",
            2,
            "Error: model store {store} has no model archive in model-store/ (looked for *.mar, "
            "*.tar.gz or a model folder holding MAR-INF/MANIFEST.json or model-config.yaml); "
            "point OUT at the folder `scibert-pack build MODEL_DIR --model-name NAME -o OUT` "
            "wrote, or rebuild it\n",
        ),
        (
            "empty-model-folder",
            2,
            "Error: model store {store} has no model archive in model-store/ (looked for *.mar, "
            "*.tar.gz or a model folder holding MAR-INF/MANIFEST.json or model-config.yaml; "
            "scibert/ holds neither); point OUT at the folder `scibert-pack build MODEL_DIR "
            "--model-name NAME -o OUT` wrote, or rebuild it\n",
        ),
        (
            "credentials-in-uri",
            2,
            "Error: 's3://***@{bucket}/m' carries credentials (the part before '@'); a URI "
            "ends up in shell history, logs and manifests, so keys never go there; remove "
            "them and let boto3's credential chain find them: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or name a profile from ~/.aws/credentials with --profile "
            "or AWS_PROFILE (see `aws configure`)\n",
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
    elif case == "empty-model-folder":
        (store / "model-store" / "scibert.mar").unlink()
        (store / "model-store" / "scibert").mkdir()
    elif case == "credentials-in-uri":
        uri = f"s3://AKIAEXAMPLE:top/secret@{bucket}/m"

    result = CliRunner().invoke(cli, ["upload", str(store), uri])

    assert (result.exit_code, result.stdout) == (exit_code, "")
    assert result.stderr == message.format(bucket=bucket, endpoint=s3_env.endpoint, store=store)
    assert s3_env.keys(bucket) == []


# Where the keys are written: the environment (boto3's chain, as it should be), or the command
# line (refused: exit 2, the keys shown nowhere). {key} and {secret} are the test's keys.
CREDENTIAL_CASES = [
    ("environment", [], 0),
    ("uri-key-and-secret", ["s3://{key}:{secret}@{bucket}/m"], 2),
    ("uri-secret-with-slash", ["s3://{key}:a/{secret}@{bucket}/m"], 2),
    ("uri-key-only", ["s3://{key}@{bucket}/m"], 2),
    ("pvc-uri", ["pvc://{key}:{secret}@claim/m"], 2),
    ("unknown-scheme", ["gs://{key}:{secret}@{bucket}/m"], 2),
    ("presigned-query", ["s3://{bucket}/m?X-Amz-Credential={key}&X-Amz-Signature={secret}"], 2),
]


@pytest.mark.s3
@pytest.mark.parametrize(
    ("args", "exit_code"), [c[1:] for c in CREDENTIAL_CASES], ids=[c[0] for c in CREDENTIAL_CASES]
)
def test_credentials_never_reach_output_or_storage(
    moto_server: S3Server,
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    tmp_path: Path,
    args: list[str],
    exit_code: int,
) -> None:
    store = make_store()
    env = s3_environ(moto_server.endpoint, tmp_path)
    uri = (args or [f"s3://{bucket}/m"])[0].format(
        key=ACCESS_KEY_ID, secret=SECRET_ACCESS_KEY, bucket=bucket
    )

    done = subprocess.run(
        [*CLI, "-vv", "upload", str(store), uri, "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == exit_code, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    if exit_code == 0:
        assert b"INFO botocore" in done.stderr  # -vv reached the AWS libraries
        assert_served(done.stdout, store, as_json=True)
    else:
        assert done.stdout == b""
        assert done.stderr.startswith(b"Error: '")
        assert moto_server.keys(bucket) == []
    stored = b"".join(
        moto_server.client().get_object(Bucket=bucket, Key=k)["Body"].read()
        for k in moto_server.keys(bucket)
    )
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert secret.encode() not in done.stdout + done.stderr + stored


@pytest.mark.s3
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_upload_killed_midway_serves_nothing_partial_and_rerun_completes(
    moto_server: S3Server,
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    tmp_path: Path,
    how: signal.Signals,
) -> None:
    v1 = make_store("v1", model_version="1.0")
    served = run(str(v1), f"s3://{bucket}/m").stdout.strip()
    v2 = make_store("v2", model_version="2.0", payload=os.urandom(3 * 1024 * 1024))
    version = scan_store(v2).version
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
            proc.send_signal(how)
            try:
                stdout, stderr = proc.communicate(timeout=60)
            finally:
                proc.kill()
    # Stopped before any storageUri was printed; Ctrl-C says how to resume.
    if how == signal.SIGKILL:
        assert (proc.returncode, stdout) == (-9, b"")
    else:
        assert (proc.returncode, stdout) == (130, b"")
        assert stderr.decode().splitlines()[-1] == (
            f"Warning: interrupted: the version under s3://{bucket}/m is not complete, and "
            "nothing serves it (its storageUri is printed only once it is); rerun the same "
            "command to resume (files already sent are not sent again)"
        )

    # The .mar did not land, and config goes last anyway (a version without it is not even
    # startable by TorchServe). The small report may or may not have landed: s3transfer submits
    # files from several threads, so which PUT reaches the stalled proxy first is not fixed.
    landed = moto_server.keys(bucket, f"m/{version}/")
    assert set(landed) <= {f"m/{version}/build-report.json"}
    assert f"m/{version}.complete.json" not in moto_server.keys(bucket)
    assert kserve_download(served, tmp_path / "still-v1") == tree(v1)

    rerun = run(str(v2), f"s3://{bucket}/m", "--json", "-q")  # run() downloads it, too

    record = json.loads(rerun.stdout)
    assert {o["path"]: o["action"] for o in record["objects"]} == {
        "build-report.json": "unchanged" if landed else "uploaded",
        "config/config.properties": "uploaded",
        "model-store/scibert.mar": "uploaded",
    }
