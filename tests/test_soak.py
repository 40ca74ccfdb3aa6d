"""The fast part of the soak: 1,000 infer requests at concurrency 32 with an explain after every
50th (on top), zero errors, and a worker whose memory stops growing: RSS is read every 100
requests and its growth over the second half must stay under a bound tight enough to catch a
leak of 20 KB per request. scripts/soak.py runs the 20,000-infer one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.build_and_serve import serving
from support.soak_load import (
    SOAK_SETTINGS,
    RssBound,
    RssSample,
    ready_pids,
    second_half_growth,
    soak,
)

from scibert_pack.serving.server import TorchServeProcess

INFER = 1_000
EXPLAIN_EVERY = 50
RSS_EVERY = 100
REQUESTS = INFER + INFER // EXPLAIN_EVERY
# Measured here: after a warm-up the tiny model's worker (~390 MiB) grows < 0.3 MiB over the
# second half of this run. 2 MiB + 0.5 % (~4 MiB) leaves room for allocator noise and is well
# under the ~10 MiB that a 20 KB-per-request leak adds over the 510 requests of that half.
BOUND = RssBound(slack_mib=2.0, fraction=0.005)
WORKER_MIB = 390.0


def _samples(leak_kib_per_request: float, noise_mib: float = 0.0) -> list[RssSample]:
    """RSS readings as the test takes them, for a worker leaking at a steady rate, with an
    alternating +-noise on top."""
    return [
        RssSample(
            done,
            WORKER_MIB + done * leak_kib_per_request / 1024 + (noise_mib if i % 2 else -noise_mib),
        )
        for i, done in enumerate([*range(0, REQUESTS, RSS_EVERY), REQUESTS])
    ]


@pytest.mark.parametrize(
    ("samples", "ok"),
    [
        pytest.param(_samples(0.0), True, id="flat"),
        pytest.param(_samples(0.0, noise_mib=1.0), True, id="flat-with-1MiB-noise"),
        pytest.param(_samples(0.5), True, id="slow-cache-fill-0.5KB"),
        pytest.param(_samples(20.0), False, id="leak-20KB-per-request"),
        pytest.param(_samples(20.0, noise_mib=1.0), False, id="leak-20KB-with-noise"),
        pytest.param(
            [*_samples(0.0)[:6], *(RssSample(s.done, s.mib + 12) for s in _samples(0.0)[6:])],
            True,
            id="step-before-the-measured-half",
        ),
    ],
)
def test_rss_bound_catches_a_20kb_per_request_leak(samples: list[RssSample], ok: bool) -> None:
    verdict = second_half_growth(samples, BOUND)
    assert verdict.ok is ok, str(verdict)


@pytest.fixture(scope="module")
def server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    with serving(tiny_bert, tmp_path_factory.mktemp("soak"), SOAK_SETTINGS) as running:
        yield running


@pytest.mark.server
@pytest.mark.slow
def test_short_soak_has_no_error_and_flat_memory(server: TorchServeProcess) -> None:
    pids = ready_pids(server)
    result = soak(
        server,
        infer_total=INFER,
        concurrency=32,
        explain_every=EXPLAIN_EVERY,
        rss_every=RSS_EVERY,
        warmup=100,
        bound=BOUND,
    )

    assert result.count("infer") == INFER
    assert result.count("explain") == INFER // EXPLAIN_EVERY
    assert result.errors() == {}, result.errors()
    assert [s.done for s in result.rss_samples] == [*range(0, REQUESTS, RSS_EVERY), REQUESTS]
    assert result.rss_check is not None
    assert result.rss_check.ok, f"{result.rss_check}: {result.rss_samples}"
    assert ready_pids(server) == pids, "the worker restarted"
