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
import os
from pathlib import Path

from bench import benchmark_models, log
from bench_variants import EXPLAIN_GAP_S, load_cells, measure_variants
from benchlib import machine, write_section

DELAYS_MS = (10, 5, 2)
CONCURRENCIES = (16, 4, 1)


def measure(model_dir: Path, label: str, seconds: float, rounds: int) -> str:
    variants = {f"{delay} ms": {"max_batch_delay_ms": delay} for delay in DELAYS_MS}
    results = measure_variants(model_dir, label, variants, CONCURRENCIES, seconds, rounds)
    lines = [
        f"### {label}",
        "",
        "| maxBatchDelay | "
        + " | ".join(f"concurrency {c}: texts/s (p50 / p99 ms)" for c in CONCURRENCIES)
        + " | lone explanation, median (ms) |",
        "|---|" + "---|" * len(CONCURRENCIES) + "---:|",
    ]
    for name, result in results.items():
        cells = load_cells(result, CONCURRENCIES)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {result.lone_explain_ms:.0f} |")
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
