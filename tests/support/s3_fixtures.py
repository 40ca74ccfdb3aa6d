"""Storage test fixtures: moto's standalone S3 server on 127.0.0.1 (once per session), a fresh
bucket per test, and fake model stores. Test modules load them with
`pytest_plugins = ["support.s3_fixtures"]`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scibert_pack.demo.local_services import LocalS3Server
from support.s3_stores_and_proxies import S3Server, s3_environ, write_store


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's standalone S3 server in its own process, once per test session."""
    with LocalS3Server(tmp_path_factory.mktemp("moto") / "server.log") as s3:
        yield S3Server(s3.endpoint)


@pytest.fixture
def s3_env(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_environ(moto_server.endpoint, tmp_path).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return moto_server


@pytest.fixture
def bucket(s3_env: S3Server) -> str:
    """A fresh, empty bucket per test."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3_env.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "out", **kwargs: Any) -> Path:
        return write_store(tmp_path / name, **kwargs)

    return make
