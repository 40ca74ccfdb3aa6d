"""`scibert-pack serve` refusals, the warning for a store without token authorization served
beyond loopback, token authorization against a real TorchServe, and the URLs it prints."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
import requests
from click.testing import CliRunner
from support.shared_servers import Secured

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.serving.ports import free_ports
from scibert_pack.serving.server import TorchServeProcess, exposure_warning


def test_port_in_use_is_a_clear_error(tiny_bert: Path, tmp_path: Path) -> None:
    build(tiny_bert, BuildSettings(name="m"), tmp_path / "store")
    inference, management, metrics, grpc = free_ports(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", management))
        taken.listen()
        result = CliRunner().invoke(
            cli,
            ["serve", str(tmp_path / "store"), "--port", str(inference),
             "--management-port", str(management), "--metrics-port", str(metrics),
             "--grpc-port", str(grpc), "--run-dir", str(tmp_path / "run")],
        )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: port {management} on 127.0.0.1 (management API) is already in use (Address "
        f"already in use); stop what listens there (see `ss -ltnp 'sport = :{management}'`) or "
        "pick other ports with --inference-port/--management-port/--metrics-port/--grpc-port"
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "Error: model store {s} does not exist; build it with: scibert-pack build MODEL_DIR --model-name NAME -o {s}"),
        (lambda p: p.mkdir(), "Error: model store {s} has no config/config.properties; build it with: scibert-pack build MODEL_DIR --model-name NAME -o {s}"),
    ],
    ids=["missing", "no-config"],
)  # fmt: skip
def test_serve_needs_a_built_store(tmp_path: Path, setup: object, message: str) -> None:
    store = tmp_path / "store"
    setup(store)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["serve", str(store)])
    assert result.exit_code == 2
    assert result.stderr == message.format(s=store) + "\n"


def test_store_without_its_archive(tiny_bert: Path, tmp_path: Path) -> None:
    build(tiny_bert, BuildSettings(name="m"), tmp_path)
    (tmp_path / "model-store" / "m.mar").unlink()
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    assert "has no model-store/m.mar, which config.properties serves" in result.stderr


@pytest.mark.parametrize(
    ("part", "kind"),
    [("model-store/m.mar", "the archive"), ("model-store", "the model-store/ folder"), ("config", "the config/ folder")],
    ids=["the-archive", "model-store-folder", "config-folder"],
)  # fmt: skip
def test_serving_a_part_of_a_store_names_the_whole(
    tiny_bert: Path, tmp_path: Path, part: str, kind: str
) -> None:
    store = tmp_path / "out"
    build(tiny_bert, BuildSettings(name="m"), store)
    result = CliRunner().invoke(cli, ["serve", str(store / part)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {store / part} is {kind} inside the model store {store}, not a store; "
        f"serve the whole store: scibert-pack serve {store}\n"
    )


EXPOSED = (
    "Warning: --host {host} serves on {where}, and this store was built without token "
    "authorization: anyone who can reach this machine can call the inference and management "
    "APIs without a key; rebuild the store with `scibert-pack build ... --token-auth` (clients "
    "then pass --token or --key-file), or serve on --host 127.0.0.1"
)
EVERYWHERE = "every network interface"
ELSEWHERE = "an address other machines may reach"


@pytest.mark.parametrize(
    ("host", "token_auth", "where"),
    [
        ("127.0.0.1", False, None),
        ("127.0.0.2", False, None),
        ("localhost", False, None),
        ("::1", False, None),
        ("[::1]", False, None),
        ("::ffff:127.0.0.1", False, None),
        ("0.0.0.0", False, EVERYWHERE),
        ("::", False, EVERYWHERE),
        ("192.168.1.20", False, ELSEWHERE),
        ("fd00::1", False, ELSEWHERE),
        ("my-host.example", False, ELSEWHERE),
        ("0.0.0.0", True, None),
        ("192.168.1.20", True, None),
    ],
    ids=[
        "loopback", "loopback-net", "localhost", "ipv6-loopback", "ipv6-loopback-brackets",
        "ipv4-mapped-loopback", "all-ipv4", "all-ipv6", "lan-address", "ipv6-ula", "host-name",
        "all-ipv4-with-token", "lan-with-token",
    ],
)  # fmt: skip
def test_exposure_warning(host: str, token_auth: bool, where: str | None) -> None:
    expected = None if where is None else EXPOSED.format(host=host, where=where)
    found = exposure_warning(host, token_auth=token_auth)
    assert (None if found is None else f"Warning: {found}") == expected


@pytest.fixture(scope="module")
def stores(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("stores")
    for name, token_auth in (("open", False), ("locked", True)):
        build(tiny_bert, BuildSettings(name=name, token_auth=token_auth), work / name)
    return {"open": work / "open", "locked": work / "locked"}


@pytest.mark.parametrize(
    ("store", "host", "warned"),
    [("open", "0.0.0.0", True), ("open", "127.0.0.1", False), ("locked", "0.0.0.0", False)],
    ids=["no-token-all-interfaces", "no-token-loopback", "token-all-interfaces"],
)
def test_serve_warns_before_exposing_a_store_without_token_auth(
    stores: dict[str, Path], tmp_path: Path, store: str, host: str, warned: bool
) -> None:
    # A taken port stops `serve` right after the warning: no server is started.
    inference, management, metrics, grpc = free_ports(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", management))
        taken.listen()
        result = CliRunner().invoke(
            cli,
            ["serve", str(stores[store]), "--host", host, "--port", str(inference),
             "--management-port", str(management), "--metrics-port", str(metrics),
             "--grpc-port", str(grpc), "--run-dir", str(tmp_path / "run"), "--quiet"],
        )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[-1].startswith(f"Error: port {management} on {host} (management API) is already")
    warning = EXPOSED.format(host=host, where=EVERYWHERE)
    assert lines[:-1] == ([warning] if warned else [])


@pytest.fixture
def token_server(secured: Secured) -> TorchServeProcess:
    return secured.server  # model "sec", built with --token-auth; shared: requests only


@pytest.mark.server
def test_token_auth_refuses_calls_without_the_token(token_server: TorchServeProcess) -> None:
    url = f"{token_server.inference_url}/v2/models/sec/infer"
    body = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["cells divide"]}]}
    # TorchServe 0.12 answers a missing or wrong token with 400 InvalidKeyException.
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        refused = requests.post(url, json=body, headers=headers, timeout=60)
        assert refused.status_code == 400
        assert refused.json()["type"] == "InvalidKeyException"
    args = ["predict", "cells divide", "--url", token_server.inference_url, "--model", "sec"]
    denied = CliRunner().invoke(cli, args, env={"SCIBERT_PACK_TOKEN": ""})
    assert denied.exit_code == 1
    assert "answered 400: Token Authorization failed" in denied.stderr
    assert denied.stderr.rstrip().endswith(
        "pass --token, or --key-file with the key_file.json TorchServe wrote"
    )
    allowed = CliRunner().invoke(cli, [*args, "--key-file", str(token_server.key_file)])
    assert allowed.exit_code == 0, allowed.output
    assert "cells divide" in allowed.stdout


SCIBERT_PACK = str(Path(sys.executable).parent / "scibert-pack")
V2_BODY = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["cells divide"]}]}


def _read_lines(stream: IO[str], count: int, deadline_s: float) -> list[str]:
    """`count` lines from a child's stdout, or fewer if it has not written them in time."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    read: list[str] = []
    end = time.monotonic() + deadline_s
    while len(read) < count and (left := end - time.monotonic()) > 0:
        try:
            read.append(lines.get(timeout=left).rstrip("\n"))
        except queue.Empty:
            break
    return read


@pytest.mark.server
def test_serve_prints_every_url_and_each_one_answers(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    inference, management, metrics, grpc = free_ports(4)
    api = f"http://127.0.0.1:{inference}"
    command = [SCIBERT_PACK, "serve", str(stores["open"]), "--inference-port", str(inference),
               "--management-port", str(management), "--metrics-port", str(metrics),
               "--grpc-port", str(grpc), "--run-dir", str(tmp_path / "run")]  # fmt: skip
    stderr = (tmp_path / "stderr").open("w")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc:
        try:
            assert proc.stdout is not None
            lines = _read_lines(proc.stdout, 9, deadline_s=240)
            assert lines == [
                "model:          open (ready)",
                f"v2 infer:       {api}/v2/models/open/infer",
                f"v2 explain:     {api}/v2/models/open/explain",
                f"v1 predict:     {api}/v1/models/open:predict",
                f"v1 explain:     {api}/v1/models/open:explain",
                f"native predict: {api}/predictions/open",
                f"native explain: {api}/explanations/open",
                f"management:     http://127.0.0.1:{management}/models/open",
                f"metrics:        http://127.0.0.1:{metrics}/metrics",
            ], (tmp_path / "stderr").read_text()
            urls = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[1:]}
            runtime = (tmp_path / "run" / "config.properties").read_bytes()
            assert runtime.endswith(b"\n") and not runtime.endswith(b"\n\n")
            answers = {
                "v2 infer": requests.post(urls["v2 infer"], json=V2_BODY, timeout=120),
                "v2 explain": requests.post(urls["v2 explain"], json=V2_BODY, timeout=120),
                "v1 predict": requests.post(
                    urls["v1 predict"], json={"instances": ["cells divide"]}, timeout=120
                ),
                "v1 explain": requests.post(
                    urls["v1 explain"], json={"instances": ["cells divide"]}, timeout=120
                ),
                "native predict": requests.post(
                    urls["native predict"], data=b"cells divide", timeout=120
                ),
                "native explain": requests.post(
                    urls["native explain"], data=b"cells divide", timeout=120
                ),
                "management": requests.get(urls["management"], timeout=60),
                "metrics": requests.get(urls["metrics"], timeout=60),
            }
            assert {k: r.status_code for k, r in answers.items()} == dict.fromkeys(answers, 200)
            assert "importances" in answers["v2 explain"].text
            assert "importances" in answers["v1 explain"].text
            assert "importances" in answers["native explain"].text
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
            stderr.close()
    assert code == 0
    assert (tmp_path / "stderr").read_text().splitlines()[-1] == "stopping TorchServe"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inference-port", "-1"], "--inference-port -1 is not a port; pass a port from 1 to 65535, or 0 for a free one"),
        (["--metrics-port", "70000"], "--metrics-port 70000 is not a port; pass a port from 1 to 65535, or 0 for a free one"),
        (["--grpc-port", "65535"], "--grpc-port 65535 is not a port; pass a port from 1 to 65534, or 0 for a free one"),
    ],
    ids=["negative", "too-big", "grpc-without-room-for-management"],
)  # fmt: skip
def test_bad_ports_are_refused_at_once(
    stores: dict[str, Path], args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, ["serve", str(stores["open"]), *args])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"Error: {message}\n"
