"""Faults under real servers: the Python worker killed under load, the S3 server gone mid-upload.

A build whose model folder vanishes or whose disk fills is covered in test_build_archive.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.build_and_serve import serving
from support.s3_stores_and_proxies import kserve_download, s3_environ, tree, write_store
from support.soak_load import KILL_RESPONSE_TIMEOUT_S, KILL_SETTINGS, kill_worker_under_load
from support.vanishing_s3 import Moto, upload_until_s3_vanishes

from scibert_pack.serving.server import TorchServeProcess
from scibert_pack.storage.local_store import scan_store

CLI = [str(Path(sys.executable).parent / "scibert-pack")]


@pytest.fixture(scope="module")
def server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    with serving(tiny_bert, tmp_path_factory.mktemp("faults"), KILL_SETTINGS) as running:
        yield running


@pytest.mark.server
@pytest.mark.slow
def test_killed_worker_is_restarted_and_in_flight_requests_fail_cleanly(
    server: TorchServeProcess,
) -> None:
    report = kill_worker_under_load(
        server, response_timeout_s=KILL_RESPONSE_TIMEOUT_S, kill_after=100, after_recovery=100
    )
    outcomes = report.load.outcomes

    assert report.new_pid != report.old_pid
    # No request hangs: each one ends within the response timeout (plus scheduling slack) of
    # the moment a worker could take it. With one worker, a request that arrives while it
    # restarts waits in TorchServe's queue until the new one is READY; that wait is the
    # restart's (seconds on a loaded machine), not a hang.
    late = [
        o
        for o in outcomes
        if o.started + o.seconds > max(o.started, report.recovered_at) + KILL_RESPONSE_TIMEOUT_S + 5
    ]
    assert late == [], (report.killed_at, report.recovered_at, late[:3])
    # The failures are the requests caught by the kill: all begun before the new worker was
    # ready, each a clean HTTP error or a closed connection, never a wrong answer.
    failed = [o for o in outcomes if o.status != "200" or not o.correct]
    assert all(o.started <= report.recovered_at for o in failed)
    assert all(o.status != "200" for o in failed), "a 200 carried a wrong answer"
    assert {o.status for o in failed} <= {"500", "503", "507", "connection error"}
    # After recovery every request succeeds, infer and explain alike.
    later = report.after_recovery()
    assert len(later) >= 100
    assert all(o.status == "200" and o.correct for o in later)
    assert {o.kind for o in later} == {"infer", "explain"}
    assert sum(1 for o in outcomes if o.started < report.killed_at and o.status == "200") >= 100


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[Moto]:
    server = Moto(tmp_path / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.parametrize("kill_moto", [False, True], ids=["connection-lost", "moto-killed"])
def test_s3_server_gone_mid_upload_publishes_nothing_and_rerun_completes(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_moto: bool
) -> None:
    """The S3 endpoint disappears while the archive is half sent. connection-lost: the server
    lives on (its state can be inspected); moto-killed: the server process dies with its state."""
    store = write_store(tmp_path / "store", model_version="2.0", payload=os.urandom(3 << 20))
    version = scan_store(store).version
    moto.server.client().create_bucket(Bucket="models")
    env = s3_environ(moto.server.endpoint, tmp_path)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)  # for KServe's downloader, in this process

    vanished = upload_until_s3_vanishes(store, "s3://models/m", moto, env, kill_moto=kill_moto)

    message = vanished.stderr
    assert vanished.returncode == 1, message
    assert vanished.stdout == ""  # no storageUri printed
    assert "Traceback" not in message
    assert message.splitlines()[-1] == (
        f"Error: cannot connect to the S3 endpoint {vanished.endpoint} to upload; "
        "check --endpoint-url / AWS_ENDPOINT_URL and that the server is up"
    )
    assert vanished.seconds < 90, f"the failed upload took {vanished.seconds:.0f} s to give up"

    if kill_moto:
        moto.start()  # same port, empty: moto keeps no state across restarts
        moto.server.client().create_bucket(Bucket="models")
    else:
        keys = moto.server.keys("models")
        assert f"m/{version}.complete.json" not in keys
        assert f"m/{version}/config/config.properties" not in keys
        assert f"m/{version}/model-store/scibert.mar" not in keys
        # KServe's downloader pointed at the version gets no startable store.
        try:
            partial = kserve_download(f"s3://models/m/{version}/", tmp_path / "partial")
        except RuntimeError:  # nothing at all under the prefix
            partial = {}
        assert "model-store/scibert.mar" not in partial
        assert "config/config.properties" not in partial

    rerun = subprocess.run(
        [*CLI, "upload", str(store), "s3://models/m", "--json", "-q"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr.decode()
    record = json.loads(rerun.stdout)
    assert record["complete"] is True
    assert f"m/{version}.complete.json" in moto.server.keys("models")
    assert kserve_download(record["storage_uri"], tmp_path / "download") == tree(store)
