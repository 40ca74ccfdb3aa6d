"""Helpers to run a real TorchServe on a freshly built tiny archive, on free loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.serving.server import ServeSettings, TorchServeProcess

__all__ = ["serving"]


@contextlib.contextmanager
def serving(
    model_dir: Path, work: Path, settings: BuildSettings, run_dir: Path | None = None
) -> Iterator[TorchServeProcess]:
    store = work / "store"
    build(model_dir, settings, store)
    serve = ServeSettings.on_free_ports(run_dir=run_dir or work / "run", ready_timeout_s=180)
    with TorchServeProcess(store, serve) as server:
        yield server
