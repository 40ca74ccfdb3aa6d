"""The fast part of the soak: 1,000 requests at concurrency 32 with explains mixed in, zero
errors, and a worker whose memory stops growing. scripts/soak.py runs the 20,000-request one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from served import serving
from soak_support import ready_pids, soak

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.serving.server import TorchServeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]
REQUESTS = 1_000
# Allocator noise and lazily filled caches, not growth (the tiny model's worker is ~300 MiB).
RSS_SLACK_MIB = 16.0


@pytest.fixture(scope="module")
def server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    settings = BuildSettings(name="tiny", profile="local", batch_size=8, max_batch_delay_ms=5)
    with serving(tiny_bert, tmp_path_factory.mktemp("soak"), settings) as running:
        yield running


def test_short_soak_has_no_error_and_flat_memory(server: TorchServeProcess) -> None:
    pids = ready_pids(server)
    result = soak(server, requests_total=REQUESTS, concurrency=32, explain_every=50)

    assert result.count() == REQUESTS
    assert result.count("explain") == REQUESTS // 50
    assert result.errors() == {}, result.errors()
    rss = result.rss_mib
    assert rss["end"] <= rss["middle"] * 1.1 + RSS_SLACK_MIB, rss
    assert ready_pids(server) == pids, "the worker restarted"
