"""A key file `serve` wrote goes only to the loopback server it was written for (issue 11,
item 2): real HTTP listeners on 127.0.0.1 and 127.0.0.2 record the headers that arrive.

The run folder here holds what `serve` leaves there while it runs (serving.json and
TorchServe's key_file.json); test_serve_local.py does the same against a real `serve`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.http_recorder import Recorder, recording

from scibert_pack.cli import cli
from scibert_pack.client.inference_client import local_server_token
from scibert_pack.serving.run_dir import default_run_dir, secure_run_dir
from scibert_pack.serving.server import ServingRecord

KEY = "local-server-key"
EXPLICIT = "explicit-token"


def _free_port_on_both() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.2", port))
            except OSError:
                continue
        return port
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port free on 127.0.0.1 and 127.0.0.2, with $XDG_RUNTIME_DIR a fresh short folder (a
    run folder's path must leave room for TorchServe's worker sockets)."""
    runtime = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("SCIBERT_PACK_TOKEN", raising=False)
    yield _free_port_on_both()
    shutil.rmtree(runtime, ignore_errors=True)


def write_run_folder(port: int, *, host: str = "127.0.0.1", pid: int | None = None) -> Path:
    """What `serve --host HOST --port PORT` keeps in its run folder while it runs."""
    run = secure_run_dir(default_run_dir(port))
    record = {"schema": "scibert-pack/serving/v1", "host": host, "port": port, "pid": pid}
    (run / "serving.json").write_text(json.dumps({**record, "pid": pid or os.getpid()}))
    keys = {"management": {"key": "management-key"}, "inference": {"key": KEY}}
    (run / "key_file.json").write_text(json.dumps(keys))
    return run


@pytest.fixture
def listen() -> Iterator[Any]:
    started: list[Recorder] = []

    def start(host: str, port: int) -> Recorder:
        server = Recorder(host, port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_refused_key_names_the_address_serve_sends_it_to(port: int) -> None:
    """The key of `serve` on 127.0.0.1 is not sent to 127.0.0.2 (or localhost): the refusal
    says which URL gets it, and where the key file is."""
    run = write_run_folder(port, host="127.0.0.1")
    with recording("127.0.0.2", port, require_token=KEY):
        result = CliRunner().invoke(
            cli, ["predict", "cells divide", "--url", f"http://127.0.0.2:{port}", "--model", "m"]
        )
    assert result.exit_code == 1, result.output
    assert f"`scibert-pack serve` runs a server on port {port} at 127.0.0.1; its key is sent " in (
        result.stderr
    )
    assert (
        f"only to that address: pass --url http://127.0.0.1:{port}, or --key-file "
        f"{run / 'key_file.json'}"
    ) in " ".join(result.stderr.split())


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# (id, serve's host, URL host, extra CLI args, record pid: "alive"/"dead", Authorization sent)
CASES: list[tuple[str, str, str, list[str], str, str | None]] = [
    ("same-host-and-port", "127.0.0.1", "127.0.0.1", [], "alive", f"Bearer {KEY}"),
    ("other-loopback-address", "127.0.0.1", "127.0.0.2", [], "alive", None),
    ("other-address-explicit-token", "127.0.0.1", "127.0.0.2", ["--token", EXPLICIT], "alive",
     f"Bearer {EXPLICIT}"),
    ("other-address-explicit-key-file", "127.0.0.1", "127.0.0.2", ["--key-file", "{key_file}"],
     "alive", f"Bearer {KEY}"),
    ("serve-on-all-addresses", "0.0.0.0", "127.0.0.2", [], "alive", f"Bearer {KEY}"),
    ("server-gone", "127.0.0.1", "127.0.0.1", [], "dead", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("serve_host", "url_host", "extra", "pid", "sent"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_key_file_goes_only_to_the_server_it_was_written_for(
    port: int,
    listen: Any,
    serve_host: str,
    url_host: str,
    extra: list[str],
    pid: str,
    sent: str | None,
) -> None:
    run = write_run_folder(port, host=serve_host, pid=_dead_pid() if pid == "dead" else os.getpid())
    recorder = listen(url_host, port)
    args = [a.format(key_file=run / "key_file.json") for a in extra]
    result = CliRunner().invoke(
        cli,
        ["predict", "cells divide", "--url", f"http://{url_host}:{port}", "--model", "m", *args],
    )
    assert result.exit_code == 0, result.output
    (headers,) = recorder.headers
    assert headers.get("Authorization") == sent


def test_a_run_folder_others_can_write_is_not_believed(port: int) -> None:
    run = write_run_folder(port)
    assert local_server_token(f"http://127.0.0.1:{port}") == KEY
    run.chmod(0o770)
    assert local_server_token(f"http://127.0.0.1:{port}") is None


@pytest.mark.parametrize(
    ("bound", "url", "served"),
    [
        ("127.0.0.1", "http://127.0.0.1:{port}", True),
        ("127.0.0.1", "http://127.0.0.2:{port}", False),
        ("127.0.0.1", "http://localhost:{port}", False),  # localhost may be ::1: another socket
        ("127.0.0.1", "http://127.0.0.1:{other}", False),
        ("127.0.0.1", "https://127.0.0.1:{port}", False),
        ("127.0.0.1", "http://127.0.0.1", False),
        ("::1", "http://[::1]:{port}", True),
        ("::1", "http://127.0.0.1:{port}", False),
        ("0.0.0.0", "http://127.0.0.5:{port}", True),
        ("0.0.0.0", "http://[::1]:{port}", False),
        ("::", "http://[::1]:{port}", True),
        ("0.0.0.0", "http://192.0.2.10:{port}", False),  # another machine, even if it is us
        ("192.0.2.10", "http://192.0.2.10:{port}", False),
        ("localhost", "http://localhost:{port}", True),
    ],
    ids=[
        "same", "other-loopback", "localhost-for-ip", "other-port", "https", "no-port",
        "ipv6-same", "ipv6-vs-ipv4", "wildcard-v4", "wildcard-v4-not-v6", "wildcard-v6",
        "wildcard-not-lan", "lan-address", "localhost-same",
    ],
)  # fmt: skip
def test_which_urls_a_key_file_is_for(port: int, bound: str, url: str, served: bool) -> None:
    write_run_folder(port, host=bound)
    found = local_server_token(url.format(port=port, other=port + 1))
    assert found == (KEY if served else None)


def test_serving_record_matches_host_and_port_only() -> None:
    record = ServingRecord("127.0.0.1", 8085, os.getpid())
    assert record.serves("127.0.0.1", 8085) and record.alive()
    assert not record.serves("127.0.0.1", 8086)
    assert not record.serves("127.0.0.2", 8085)
