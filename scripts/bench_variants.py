"""Archives of one model that differ in one build setting, served at once and loaded in turn.

Shared by the benchmarks of a single setting (bench_batch_delay.py, bench_packed.py): for each
variant, closed-loop v2 infer at several concurrencies (one text per request), the latency of a
lone explanation (tolerance mode, one text, after a short idle gap), and each worker's memory as
TorchServe's management API reports it. Windows alternate between the variants, so a slow spell
of the machine falls on all of them.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import BLOG_TEXT, Load, load, log, served

# Seconds between lone explanations: the worker is idle when the next one arrives.
EXPLAIN_GAP_S = 0.1


@dataclass
class VariantResult:
    loads: dict[int, list[Load]] = field(default_factory=dict)  # by concurrency
    explains: list[float] = field(default_factory=list)  # seconds
    worker_memory_mb: list[float] = field(default_factory=list)

    def load(self, concurrency: int) -> Load:
        return Load.median(self.loads[concurrency])

    @property
    def lone_explain_ms(self) -> float:
        return statistics.median(self.explains) * 1000


def lone_explanations(server: Any, count: int) -> list[float]:
    """Seconds of `count` one-text explanations, one at a time, each after a short idle gap."""
    import requests

    url = f"{server.inference_url}/v2/models/{server.model_name}/explain"
    payload = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [BLOG_TEXT]}],
        "parameters": {"granularity": "pieces"},
    }
    times = []
    with requests.Session() as session:
        for _ in range(count):
            time.sleep(EXPLAIN_GAP_S)
            start = time.perf_counter()
            session.post(url, json=payload, timeout=120).raise_for_status()
            times.append(time.perf_counter() - start)
    return times


def worker_memory_mb(server: Any) -> list[float]:
    """Each worker's memory (TorchServe's memoryUsage, resident bytes) in MB."""
    import requests

    url = f"{server.management_url}/models/{server.model_name}"
    (described,) = requests.get(url, timeout=30).json()
    return [w["memoryUsage"] / 1e6 for w in described["workers"]]


def measure_variants(
    model_dir: Path,
    label: str,
    variants: Mapping[str, Mapping[str, Any]],
    concurrencies: Sequence[int],
    seconds: float,
    rounds: int,
) -> dict[str, VariantResult]:
    """Results by variant name; `variants` maps a name to BuildSettings keyword arguments."""
    from scibert_pack.archiver.build import build
    from scibert_pack.archiver.settings import BuildSettings

    results = {name: VariantResult() for name in variants}
    names = list(variants)
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp, contextlib.ExitStack() as up:
        servers = {}
        for i, (name, overrides) in enumerate(variants.items()):
            store = Path(tmp) / f"store-{i}"
            build(model_dir, BuildSettings(name="m", **overrides), store)
            servers[name] = up.enter_context(served(store, Path(tmp) / f"run-{i}"))
        for server in servers.values():  # every worker has run both request kinds
            load(server, 1.0)
            lone_explanations(server, 4)
        for rnd in range(rounds):
            order = names if rnd % 2 == 0 else names[::-1]
            for concurrency in concurrencies:
                for name in order:
                    got = load(servers[name], seconds, concurrency=concurrency)
                    results[name].loads.setdefault(concurrency, []).append(got)
                    log(
                        f"  [{label}] {name}, concurrency {concurrency}: "
                        f"{got.texts_per_s:.1f} texts/s, p99 {got.p99_ms:.0f} ms"
                    )
            for name in order:
                results[name].explains.extend(lone_explanations(servers[name], 5))
        for name in names:
            results[name].worker_memory_mb = worker_memory_mb(servers[name])
    return results


def load_cells(result: VariantResult, concurrencies: Sequence[int]) -> list[str]:
    """'texts/s (p50 / p99 ms)' per concurrency, failures named."""
    cells = []
    for concurrency in concurrencies:
        got = result.load(concurrency)
        cells.append(
            f"{got.texts_per_s:.1f} ({got.p50_ms:.0f} / {got.p99_ms:.0f})"
            + (f", {got.errors} failed" if got.errors else "")
        )
    return cells
