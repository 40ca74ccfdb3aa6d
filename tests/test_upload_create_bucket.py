"""`scibert-pack upload --create-bucket` against moto's S3 server on 127.0.0.1: a missing bucket
is made in the client's region, an existing one is left alone, and nothing is made when the
upload would not write."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.s3_stores_and_proxies import S3Server, free_port, kserve_download, tree

from scibert_pack.cli import cli
from scibert_pack.storage.local_store import scan_store

pytest_plugins = ["support.s3_fixtures"]


def _exists(s3: S3Server, name: str) -> bool:
    return name in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}


@pytest.mark.s3
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"], ids=["us-east-1", "other-region"])
def test_a_missing_bucket_is_made_in_the_clients_region(
    s3_env: S3Server,
    make_store: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    region: str,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    name = f"new-{uuid.uuid4().hex[:12]}"
    store = make_store()
    uri = f"s3://{name}/scibert/{scan_store(store).version}/"

    first = CliRunner().invoke(
        cli, ["upload", str(store), f"s3://{name}/scibert", "--create-bucket"]
    )

    assert (first.exit_code, first.stdout) == (0, uri + "\n"), first.output
    assert first.stderr.splitlines()[0] == f"created bucket s3://{name}"
    location = s3_env.client().get_bucket_location(Bucket=name)["LocationConstraint"]
    assert (location or "us-east-1") == region
    with tempfile.TemporaryDirectory() as dest:
        assert kserve_download(uri, Path(dest)) == tree(store)

    again = CliRunner().invoke(
        cli, ["upload", str(store), f"s3://{name}/scibert", "--create-bucket"]
    )

    assert (again.exit_code, again.stdout) == (0, uri + "\n"), again.output
    assert "created bucket" not in again.stderr


@pytest.mark.s3
def test_dry_run_creates_nothing(s3_env: S3Server, make_store: Callable[..., Path]) -> None:
    name = f"new-{uuid.uuid4().hex[:12]}"
    result = CliRunner().invoke(
        cli, ["upload", str(make_store()), f"s3://{name}/m", "--create-bucket", "--dry-run"]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: bucket '{name}' does not exist at {s3_env.endpoint}; rerun the upload with "
        "--create-bucket to create it, or check the name\n"
    )
    assert not _exists(s3_env, name)


@pytest.mark.parametrize(
    "uri", ["pvc://claim/scibert", "{tmp}/elsewhere"], ids=["pvc", "local-folder"]
)
def test_create_bucket_is_for_s3_only(
    make_store: Callable[..., Path], tmp_path: Path, uri: str
) -> None:
    target = uri.format(tmp=tmp_path)
    result = CliRunner().invoke(cli, ["upload", str(make_store()), target, "--create-bucket"])
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: --create-bucket is for s3:// URIs, not '{target}'\n")


@pytest.mark.s3
def test_the_readmes_local_upload_block_runs_as_written(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    """README's "Try it locally" commands, run by bash in a folder with `.venv` and `./out`.
    Changes: a free port instead of 5000 (tests run in parallel), a wait for moto to listen,
    which a person typing the next line does without noticing, and at the end a bounded wait for
    moto's process to end (`kill` only sends the signal; another test may reuse the port)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    found = re.search(r"### Try it locally.*?```bash\n(.*?)```", readme, re.S)
    assert found is not None
    lines = found.group(1).replace("5000", str(port := free_port())).splitlines()
    moto = next(i for i, line in enumerate(lines) if line.startswith("moto_server "))
    wait = f"for i in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done"
    lines.insert(moto + 1, f"moto_pid=$!; {wait}")
    lines += [
        'for i in $(seq 100); do kill -0 "$moto_pid" 2>/dev/null || break; sleep 0.1; done',
        'kill -0 "$moto_pid" 2>/dev/null && echo "moto still running" >&2 || echo "moto stopped" >&2',
    ]
    store = make_store("out")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    done = subprocess.run(
        ["bash", "-e", "-c", "\n".join(lines)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    uri = f"s3://models/scibert/{scan_store(store).version}/"
    assert done.stdout == uri + "\n"
    assert "created bucket s3://models" in done.stderr
    assert done.stderr.rstrip().endswith("moto stopped"), done.stderr  # `kill %1` stopped it
