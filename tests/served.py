"""Helpers to run a real TorchServe on a freshly built tiny archive, on free loopback ports."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.serving.server import ServeSettings, TorchServeProcess


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports, with port+1 free too for the last (gRPC management)."""
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(ports) < count + 1:
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in ports and port + 1 not in ports and port - 1 not in ports:
                ports.append(port)
    ports.sort()
    return ports[:count]


@contextlib.contextmanager
def serving(
    model_dir: Path, work: Path, settings: BuildSettings, run_dir: Path | None = None
) -> Iterator[TorchServeProcess]:
    store = work / "store"
    build(model_dir, settings, store)
    inference, management, metrics, grpc = free_ports(4)
    serve = ServeSettings(
        port=inference,
        management_port=management,
        metrics_port=metrics,
        grpc_port=grpc,
        run_dir=run_dir or work / "run",
        ready_timeout_s=180,
    )
    with TorchServeProcess(store, serve) as server:
        yield server
