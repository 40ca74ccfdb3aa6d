"""TorchServe's maxBatchDelay (`build --max-batch-delay`): throughput, latency, lone explanation.

TorchServe holds a batch's first request until `batchSize` requests arrived or maxBatchDelay
passed, so a lone request always waits the whole delay. For each model and delay, in one run:
served v2 infer texts/s, p50 and p99 at several closed-loop concurrencies (one text per
request), and the latency of a lone explanation (tolerance mode, one text). All archives are up
at once and loaded in turn, windows alternate between them.

Run: .venv/bin/python scripts/bench_batch_delay.py [--quick]. Writes its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import BLOG_TEXT, Load, benchmark_models, load, log, served
from benchlib import machine, write_section

DELAYS_MS = (10, 5, 2)
CONCURRENCIES = (16, 4, 1)
# Seconds between lone explanations: the worker is idle when the next one arrives.
EXPLAIN_GAP_S = 0.1


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


def measure(model_dir: Path, label: str, seconds: float, rounds: int) -> str:
    from scibert_pack.archiver.build import build
    from scibert_pack.archiver.settings import BuildSettings

    loads: dict[tuple[int, int], list[Load]] = {}
    explains: dict[int, list[float]] = {delay: [] for delay in DELAYS_MS}
    with tempfile.TemporaryDirectory(prefix="bench-delay-") as tmp, contextlib.ExitStack() as up:
        servers = {}
        for delay in DELAYS_MS:
            store = Path(tmp) / f"store-{delay}"
            build(model_dir, BuildSettings(name="m", max_batch_delay_ms=delay), store)
            servers[delay] = up.enter_context(served(store, Path(tmp) / f"run-{delay}"))
        for server in servers.values():  # every worker has run both request kinds
            load(server, 1.0)
            lone_explanations(server, 4)
        for rnd in range(rounds):
            order = DELAYS_MS if rnd % 2 == 0 else DELAYS_MS[::-1]
            for concurrency in CONCURRENCIES:
                for delay in order:
                    got = load(servers[delay], seconds, concurrency=concurrency)
                    loads.setdefault((delay, concurrency), []).append(got)
                    log(
                        f"  [{label}] delay {delay} ms, concurrency {concurrency}: "
                        f"{got.texts_per_s:.1f} texts/s, p99 {got.p99_ms:.0f} ms"
                    )
            for delay in order:
                explains[delay].extend(lone_explanations(servers[delay], 5))
    lines = [
        f"### {label}",
        "",
        "| maxBatchDelay | "
        + " | ".join(f"concurrency {c}: texts/s (p50 / p99 ms)" for c in CONCURRENCIES)
        + " | lone explanation, median (ms) |",
        "|---|" + "---|" * len(CONCURRENCIES) + "---:|",
    ]
    for delay in DELAYS_MS:
        cells = []
        for concurrency in CONCURRENCIES:
            got = Load.median(loads[(delay, concurrency)])
            cells.append(
                f"{got.texts_per_s:.1f} ({got.p50_ms:.0f} / {got.p99_ms:.0f})"
                + (f", {got.errors} failed" if got.errors else "")
            )
        lone = statistics.median(explains[delay]) * 1000
        lines.append(f"| {delay} ms | " + " | ".join(cells) + f" | {lone:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows (a smoke run)")
    models = benchmark_models()
    parser.add_argument("--models", nargs="+", default=list(models), choices=list(models))
    args = parser.parse_args()
    seconds, rounds = (2.0, 1) if args.quick else (10.0, 3)
    before = os.getloadavg()[0]
    sections = []
    for key in args.models:
        model_dir, label = models[key]()
        log(f"[{label}]")
        sections.append(measure(model_dir, label, seconds, rounds))
    after = os.getloadavg()[0]
    body = "\n\n".join(
        [
            "## TorchServe maxBatchDelay (`build --max-batch-delay`) "
            "(scripts/bench_batch_delay.py)",
            f"Machine: {machine()}. 1-minute load average {before:.1f} before, {after:.1f} after. "
            "Default archives but for the delay, all up at once and loaded in turn: closed-loop "
            f"v2 infer, one text per request, median of {rounds} alternating windows of "
            f"{seconds:g} s; lone explanation: the blog sentence, tolerance mode, one request "
            f"at a time after {EXPLAIN_GAP_S * 1000:.0f} ms idle, median of {5 * rounds}.",
            *sections,
        ]
    )
    print(body)
    if not args.quick:
        write_section("batch_delay", body)


if __name__ == "__main__":
    main()
