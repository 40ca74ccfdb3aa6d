"""Helpers to run a real TorchServe on a freshly built tiny archive, on free loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.demo.local_services import free_ports
from scibert_pack.serving.server import ServeSettings, TorchServeProcess

__all__ = ["free_ports", "serving"]


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
