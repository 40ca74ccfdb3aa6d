"""Archives of one model that differ in one build setting, served at once and loaded in turn.

Shared by the benchmarks of a single setting (bench_batch_delay.py, bench_packed.py,
bench_first_token.py): for each variant, closed-loop v2 infer at several concurrencies (one text
per request), the latency of a lone explanation (tolerance mode, one text, after a short idle
gap), and each worker's memory as TorchServe's management API reports it. Windows alternate
between the variants, so a slow spell of the machine falls on all of them. Also the in-process
side of such an A/B: two models' forward and explanation-pass rates in interleaved windows, and
the tables of both.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from bench import BLOG_TEXT, Load, load, log, served

# Seconds between lone explanations: the worker is idle when the next one arrives.
EXPLAIN_GAP_S = 0.1
# Rows of an explanation pass in process (8 path points, f(x) and f(baseline)).
EXPLAIN_ROWS = 10


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


def explain_pass(model: Any, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
    """Forward and backward to the embeddings over EXPLAIN_ROWS rows: an explanation's pass."""
    ids, mask, types = (t.repeat(EXPLAIN_ROWS, 1) for t in inputs)
    with torch.no_grad():
        start = model.get_input_embeddings()(ids)

    def step() -> object:
        points = start.detach().requires_grad_(True)
        logits = model(inputs_embeds=points, attention_mask=mask, token_type_ids=types).logits
        return torch.autograd.grad(logits[:, 0].sum(), points)

    return step


def in_process_rates(
    variants: Mapping[str, tuple[Any, Any]],
    inputs: Mapping[int, tuple[torch.Tensor, ...]],
    threads: Sequence[int],
    seconds: float,
    rounds: int,
) -> dict[str, float]:
    """Best rates of each variant (name -> (logits module, model)) over `rounds` interleaved
    rounds: texts/s by "{name}@{batch}/t{threads}" for every batch of `inputs`, and explanation
    passes/s (over the batch-1 inputs) by "{name}@explain/t{threads}"."""
    from bench_compile import best_seconds, rate  # it sets compiler caches off when imported

    rates: dict[str, float] = {}

    def keep(key: str, got: float) -> None:
        rates[key] = max(rates.get(key, 0.0), got)

    for _ in range(rounds):
        for count in threads:
            torch.set_num_threads(count)
            for size, batch in inputs.items():
                for name, (logits, _) in variants.items():
                    keep(f"{name}@{size}/t{count}", rate(logits, batch, seconds))
            for name, (_, model) in variants.items():
                step = explain_pass(model, inputs[1])
                keep(f"{name}@explain/t{count}", 1.0 / best_seconds(step, seconds))
    return rates


def in_process_rows(
    rates: Mapping[str, float],
    names: tuple[str, str],
    columns: tuple[str, str],
    sizes: Sequence[int],
    threads: Sequence[int],
) -> list[str]:
    """The in-process table of in_process_rates: variant names[1] against names[0], headed
    `columns`, with their ratio."""
    (a_name, b_name), (a_col, b_col) = names, columns
    lines = [
        "In process (texts/s; explanation pass: passes/s), best of interleaved windows:",
        "",
        f"| what | threads | {a_col} | {b_col} | {b_col} / {a_col} |",
        "|---|---|---:|---:|---:|",
    ]
    for what in (*(f"batch {s}" for s in sizes), "explanation pass"):
        key = what.split()[-1] if what.startswith("batch") else "explain"
        for count in threads:
            a, b = rates[f"{a_name}@{key}/t{count}"], rates[f"{b_name}@{key}/t{count}"]
            lines.append(f"| {what} | {count} | {a:.1f} | {b:.1f} | **{b / a:.2f}x** |")
    return lines


def served_rows(
    served: Mapping[str, VariantResult], concurrencies: Sequence[int], *, memory: bool
) -> list[str]:
    """The served table of measure_variants' results (with each worker's memory if `memory`),
    and the first variant's texts/s against the second's per concurrency."""
    lines = [
        "| archive | "
        + " | ".join(f"concurrency {c}: texts/s (p50 / p99 ms)" for c in concurrencies)
        + " | lone explanation, median (ms) |"
        + (" worker memory (MB) |" if memory else ""),
        "|---|" + "---|" * len(concurrencies) + "---:|" + ("---|" if memory else ""),
    ]
    for name, result in served.items():
        mb = " / ".join(f"{m:.0f}" for m in result.worker_memory_mb)
        lines.append(
            f"| {name} | "
            + " | ".join(load_cells(result, concurrencies))
            + f" | {result.lone_explain_ms:.0f} |"
            + (f" {mb} |" if memory else "")
        )
    return lines


def served_ratios(served: Mapping[str, VariantResult], concurrencies: Sequence[int]) -> str:
    """The first variant's texts/s over the second's, per concurrency ("concurrency C: **R**")."""
    (on, off) = served.values()
    return ", ".join(
        f"concurrency {c}: **{on.load(c).texts_per_s / off.load(c).texts_per_s:.2f}x**"
        for c in concurrencies
    )
