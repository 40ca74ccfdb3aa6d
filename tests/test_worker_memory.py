"""Worker memory under the largest requests an archive allows, against a real TorchServe.

16 requests at once, each as large as the archive lets through (max_texts_per_request texts of
max_text_chars characters, just under the front end's max_request_size), on the infer route and
the explain route. Each worker's RSS is read from /proc/PID/status (the pids the management API
lists): its peak (VmHWM, the high-water mark since the worker started, so model loading counts
too) must stay within IDLE + RSS_HEADROOM_MIB + the model's weights, and once the load is over
its RSS must come back to within RSS_SETTLED_MIB of what it was before.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.build_and_serve import serving
from support.soak_load import ready_pids, rss_mib
from support.tiny_models import CORPUS

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.handlers.settings import HandlerSettings
from scibert_pack.serving.server import TorchServeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL = "tiny"
TEXTS = 100
TEXT_CHARS = 100_000
EXPLAIN_TEXTS = 16
LIMITS = HandlerSettings(
    max_texts_per_request=TEXTS, max_text_chars=TEXT_CHARS, max_explain_texts=EXPLAIN_TEXTS
)
# 100 texts of 100,000 ASCII characters and their JSON framing.
MAX_REQUEST_BYTES = 10_100_000
CONCURRENT = 16
# The README's bound (Limits): a worker's peak RSS stays within its idle RSS + this + the size of
# the model's weights, and settles back to within RSS_SETTLED_MIB of idle.
RSS_HEADROOM_MIB = 300
RSS_SETTLED_MIB = 40


@pytest.fixture(scope="module")
def server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    settings = BuildSettings(
        name=MODEL,
        profile="local",
        min_workers=2,
        max_workers=2,
        batch_size=8,
        max_batch_delay_ms=50,
        response_timeout_s=120,
        max_request_bytes=MAX_REQUEST_BYTES,
        handler=LIMITS,
    )
    with serving(tiny_bert, tmp_path_factory.mktemp("memory"), settings) as running:
        yield running


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no {field}")


def big_text(seed: int) -> str:
    words = " ".join(CORPUS[seed % len(CORPUS) :] + CORPUS[: seed % len(CORPUS)])
    return (f"{seed} " + words * (TEXT_CHARS // len(words) + 1))[:TEXT_CHARS]


def v2_body(texts: list[str]) -> bytes:
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    return json.dumps({"inputs": [tensor]}).encode()


def small(server: TorchServeProcess, rounds: int = 16) -> None:
    """Enough small requests, infer and explain, that every worker answers some: warm, with
    Captum imported (tens of MB that stay, as any module does)."""
    base = f"{server.inference_url}/v2/models/{MODEL}"

    def go(i: int) -> requests.Response:
        kind = "explain" if i % 2 else "infer"
        return requests.post(f"{base}/{kind}", data=v2_body([CORPUS[i % 10]]), timeout=60)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(go, range(rounds)))
    assert all(a.status_code == 200 for a in answers)


def test_sixteen_maximum_size_requests_keep_worker_rss_bounded(
    server: TorchServeProcess, tiny_bert: Path
) -> None:
    pids = ready_pids(server)
    assert len(pids) == 2, pids
    small(server)
    idle = {pid: rss_mib(pid) for pid in pids}
    weights_mib = sum(f.stat().st_size for f in tiny_bert.glob("*.safetensors")) / 2**20
    infer = v2_body([big_text(i) for i in range(TEXTS)])
    explain = v2_body([big_text(i) for i in range(EXPLAIN_TEXTS)])
    assert len(infer) <= MAX_REQUEST_BYTES
    base = f"{server.inference_url}/v2/models/{MODEL}"
    jobs = [("explain", explain) if i % 4 == 3 else ("infer", infer) for i in range(CONCURRENT)]
    barrier = threading.Barrier(len(jobs))

    def go(job: tuple[str, bytes]) -> requests.Response:
        barrier.wait(timeout=60)
        headers = {"Content-Type": "application/json"}
        return requests.post(f"{base}/{job[0]}", data=job[1], headers=headers, timeout=300)

    started = time.monotonic()
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(go, jobs))
    seconds = time.monotonic() - started
    for (kind, _), answer in zip(jobs, answers, strict=True):
        assert answer.status_code == 200, (kind, answer.text[:300])
        body = answer.json()
        expected = TEXTS if kind == "infer" else EXPLAIN_TEXTS
        if kind == "infer":
            assert body["parameters"]["truncated"] == [True] * expected
        else:
            assert [item["truncated"] for item in body["outputs"][0]["data"]] == [True] * expected
    peak = {pid: status_kib(pid, "VmHWM") / 1024 for pid in pids}
    # TorchServe's worker frees a batch when the next one arrives; the handler then hands the
    # free memory back to the OS half a second later (malloc_trim).
    small(server)
    time.sleep(2.0)
    settled = {pid: rss_mib(pid) for pid in pids}
    report = {
        pid: f"idle {idle[pid]:.0f} MiB, peak {peak[pid]:.0f} MiB, after {settled[pid]:.0f} MiB"
        for pid in pids
    }
    print(f"\n{CONCURRENT} requests in {seconds:.1f} s; weights {weights_mib:.2f} MiB; {report}")
    assert ready_pids(server) == pids, "a worker restarted"
    for pid in pids:
        assert peak[pid] <= idle[pid] + RSS_HEADROOM_MIB + weights_mib, report
        assert settled[pid] <= idle[pid] + RSS_SETTLED_MIB, report
