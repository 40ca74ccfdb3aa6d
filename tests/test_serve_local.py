"""A real `scibert-pack serve --port 0 ...` on a --token-auth store, in its default run folder:
free ports picked and printed, the run folder named by the real port and private, the key sent
only to that server (a listener on 127.0.0.2 records what arrives), and nothing of a stopped
server left behind (issue 11 items 1-2, issue 12 items 4 and 9)."""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.http_recorder import Recorder

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.errors import PortInUseError
from scibert_pack.serving.server import ServeSettings, TorchServeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]
SCIBERT_PACK = str(Path(sys.executable).parent / "scibert-pack")
ZERO_PORTS = ["--port", "0", "--management-port", "0", "--metrics-port", "0", "--grpc-port", "0"]


@dataclass
class Served:
    runtime: Path
    ports: dict[str, int]
    lines: list[str]
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def run_dir(self) -> Path:
        return self.runtime / f"scibert-pack-{os.getuid()}" / f"serve-{self.ports['inference']}"


def _read_until_ready(process: subprocess.Popen[str], timeout_s: float) -> list[str]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if line.startswith("key file:"):  # the last line a --token-auth store's serve prints
            return seen
    raise AssertionError(f"serve printed no URLs in {timeout_s:.0f} s: {seen}")


@pytest.fixture(scope="module")
def served(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve-local")
    store = work / "store"
    build(tiny_bert, BuildSettings(name="locked", token_auth=True, profile="local"), store)
    runtime = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))  # room for the worker sockets
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("SCIBERT_PACK_TOKEN", None)
    with (work / "serve.err").open("w") as err:
        process = subprocess.Popen(
            [SCIBERT_PACK, "serve", str(store), *ZERO_PORTS],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        lines = _read_until_ready(process, 240)
        (ports_line,) = [line for line in lines if line.startswith("ports:")]
        ports = {
            api.strip(): int(port)
            for api, _, port in (
                item.rpartition(" ") for item in ports_line.split(":", 1)[1].split(",")
            )
        }
        yield Served(runtime, ports, lines, process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(runtime, ignore_errors=True)


def test_port_zero_picks_free_ports_and_prints_them(served: Served) -> None:
    ports = served.ports
    assert set(ports) == {
        "inference", "management", "metrics", "gRPC inference", "gRPC management",
    }  # fmt: skip
    assert 0 not in ports.values()
    assert len(set(ports.values())) == 5
    assert ports["gRPC management"] == ports["gRPC inference"] + 1
    assert f"v2 infer:       {served.url}/v2/models/locked/infer" in served.lines
    assert f"management:     http://127.0.0.1:{ports['management']}/models/locked" in served.lines
    # The run folder is named by the real port: no serve-0 to be reused by the next attempt.
    assert sorted(p.name for p in served.run_dir.parent.iterdir()) == [
        f"serve-{ports['inference']}"
    ]
    assert f"key file:       {served.run_dir / 'key_file.json'}" in served.lines


def test_run_folder_and_everything_in_it_are_private(served: Served) -> None:
    checked = 0
    for folder in (served.run_dir.parent, served.run_dir):
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700
    for path in [served.run_dir, *served.run_dir.rglob("*")]:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
            assert stat.S_IMODE(info.st_mode) & 0o077 == 0, (path, oct(info.st_mode))
            checked += 1
    logs = served.run_dir / "logs"
    for name in ("ts_log.log", "model_log.log"):
        assert stat.S_IMODE((logs / name).stat().st_mode) == 0o600
    for name in ("key_file.json", "serving.json", "config.properties", "torchserve.out"):
        assert stat.S_IMODE((served.run_dir / name).stat().st_mode) == 0o600
    assert checked > 10


def test_key_goes_to_this_server_and_to_no_other_address(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(served.runtime))
    monkeypatch.delenv("SCIBERT_PACK_TOKEN", raising=False)
    port = served.ports["inference"]
    predict = ["predict", "cells divide", "--model", "locked"]

    # The server serve started: its key is found and accepted, no --token needed.
    found = CliRunner().invoke(cli, [*predict, "--url", served.url])
    assert found.exit_code == 0, found.output
    assert "cells divide" in found.stdout

    # Whatever listens on another loopback address at the same port gets no key...
    recorder = Recorder("127.0.0.2", port)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        elsewhere = ["--url", f"http://127.0.0.2:{port}"]
        quiet = CliRunner().invoke(cli, [*predict, *elsewhere])
        # ...unless the user says so.
        told = CliRunner().invoke(cli, [*predict, *elsewhere, "--token", "meant-for-there"])
    finally:
        recorder.shutdown()
        recorder.server_close()
    assert (quiet.exit_code, told.exit_code) == (0, 0), quiet.output + told.output
    assert [h.get("Authorization") for h in recorder.headers] == [None, "Bearer meant-for-there"]


@pytest.fixture
def short_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """$XDG_RUNTIME_DIR short enough for TorchServe's worker sockets (108 bytes a path)."""
    runtime = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime
    shutil.rmtree(runtime, ignore_errors=True)


def test_stopped_server_leaves_no_pid_file_socket_or_key(
    tiny_bert: Path, tmp_path: Path, short_runtime: Path
) -> None:
    build(tiny_bert, BuildSettings(name="m", profile="local", min_workers=1), tmp_path / "store")
    settings = ServeSettings.on_free_ports(ready_timeout_s=180)
    server = TorchServeProcess(tmp_path / "store", settings)
    assert server.settings.port != 0
    with server:
        run_dir = server.run_dir
        assert run_dir.name == f"serve-{server.settings.port}"
        tmp = run_dir / "tmp"
        # What TorchServe keeps while it runs: its pid file and a socket per worker.
        assert (tmp / ".model_server.pid").is_file()
        sockets = [p for p in tmp.iterdir() if stat.S_ISSOCK(os.lstat(p).st_mode)]
        assert sockets, sorted(p.name for p in tmp.iterdir())
        assert (run_dir / "serving.json").is_file()
    assert not tmp.exists()
    assert not (run_dir / "serving.json").exists()
    assert not (run_dir / "key_file.json").exists()
    assert (run_dir / "logs" / "ts_log.log").is_file()  # logs stay to be read


class _NoPortCheck(TorchServeProcess):
    """Skips the check before start, so TorchServe's own bind is what meets the taken port."""

    def _check_ports(self) -> None:
        return None


@pytest.mark.parametrize(
    "process_class",
    [TorchServeProcess, _NoPortCheck],
    ids=["taken-before-the-check", "taken-before-torchserve-binds"],
)
def test_a_picked_port_taken_before_start_is_picked_again(
    tiny_bert: Path, tmp_path: Path, short_runtime: Path, process_class: type[TorchServeProcess]
) -> None:
    """Port 0 means any free port: another process taking the one picked, in the seconds before
    TorchServe listens, costs a restart on other ports, not the start."""
    build(tiny_bert, BuildSettings(name="m", profile="local", min_workers=1), tmp_path / "store")
    messages: list[str] = []
    server = process_class(
        tmp_path / "store",
        ServeSettings.on_free_ports(ready_timeout_s=180),
        progress=messages.append,
    )
    taken = server.settings.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.settings.port != taken
            assert server.run_dir.name == f"serve-{server.settings.port}"
            with urllib.request.urlopen(f"{server.inference_url}/ping", timeout=10) as reply:
                assert reply.status == 200
    assert any("starting again on other free ports" in m for m in messages), messages


def test_a_given_port_in_use_is_not_picked_around(tiny_bert: Path, tmp_path: Path) -> None:
    """Only ports picked for 0 are picked again: a port the user gave stays an error at once."""
    build(tiny_bert, BuildSettings(name="m", profile="local"), tmp_path / "store")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        given = int(taken.getsockname()[1])
        messages: list[str] = []
        settings = dataclasses.replace(ServeSettings.on_free_ports(), management_port=given)
        server = TorchServeProcess(tmp_path / "store", settings, progress=messages.append)
        with pytest.raises(PortInUseError, match=f"port {given} on 127.0.0.1 \\(management API\\)"):
            server.__enter__()
    assert not [m for m in messages if "starting again" in m], messages
