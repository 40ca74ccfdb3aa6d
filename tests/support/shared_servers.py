"""TorchServe servers shared by every test module that only sends them requests, one per
configuration, started on first use and stopped at the end of the session.

Never kill their workers, scale, register or unregister models on them: a test that does gets
its own server (see test_faults.py, test_soak.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.serving.server import ServeSettings, TorchServeProcess
from support.build_and_serve import serving


@pytest.fixture(scope="session")
def tiny_server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    """The tiny BERT as model "tiny": batches of 8 within 30 ms, 60 s response timeout, the
    local profile."""
    settings = BuildSettings(
        name="tiny", profile="local", batch_size=8, max_batch_delay_ms=30, response_timeout_s=60
    )
    with serving(tiny_bert, tmp_path_factory.mktemp("tiny-server"), settings) as running:
        yield running


@dataclass
class Secured:
    """A store built through the CLI with --token-auth, served, and what the CLI printed."""

    store: Path
    server: TorchServeProcess
    outputs: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def secured(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """The tiny BERT as model "sec", built by `scibert-pack build --token-auth --profile local`:
    its calls need the token from the server's key file."""
    work = tmp_path_factory.mktemp("secured")
    store = work / "store"
    args = ["build", str(tiny_bert), "--name", "sec", "-o", str(store), "--profile", "local"]
    built = CliRunner().invoke(cli, [*args, "--token-auth", "--json"])
    assert built.exit_code == 0, built.output
    serve = ServeSettings.on_free_ports(run_dir=work / "run", ready_timeout_s=180)
    with TorchServeProcess(store, serve) as server:
        yield Secured(store, server, [built.stdout, built.stderr])


def worker_states(server: TorchServeProcess) -> list[tuple[int, str]]:
    """(pid, status) of each of the model's workers, from the management API: a test compares
    them before and after to show that no worker restarted."""
    described = requests.get(f"{server.management_url}/models/{server.model_name}", timeout=10)
    return sorted((int(w["pid"]), str(w["status"])) for w in described.json()[0]["workers"])


def worker_pids(server: TorchServeProcess) -> list[int]:
    return [pid for pid, _ in worker_states(server)]
