"""Prediction backends (`build --runtime`) on MiniLM-L6 and a bert-base-sized model, in one run.

Per model: builds one archive per runtime (build time, archive size, the build's runtime_check),
then in process texts/s of tokenize + forward of the blog sentence for torch eager at batch
1..32 (its best is the baseline) and each other runtime at 1 and 8, at 1 and 2 threads, in
interleaved windows (best of --rounds, so a burst of load from other processes does not decide
it); each archive's cold start (serve to first answer); then all archives served at once and
loaded in turn (A, B, C, D, A, ...): texts/s at concurrency 16 with one text per request and
with 8, median of --rounds windows, as ratios to the in-process torch best.
Writes the `backends` section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_backends.py [--seconds 2] [--rounds 3] [--served-seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench import BLOG_TEXT, CACHE, Load, benchmark_models, cold_start, load, log, served
from benchlib import machine, write_section

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.handlers.model import Classifier, load_pretrained
from scibert_pack.handlers.onnx_runtime import OnnxLogits, onnx_file
from scibert_pack.handlers.settings import HandlerSettings

RUNTIMES = ("torch", "onnx", "torch-int8", "onnx-int8")
SIZES = (1, 8)
TORCH_SIZES = (1, 4, 8, 16, 32)
THREADS = (1, 2)
PER_REQUEST = (1, 8)


def rate(step: Callable[[list[str]], object], size: int, seconds: float) -> float:
    texts = [BLOG_TEXT] * size
    step(texts)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(texts)
        done += size
    return done / (time.perf_counter() - start)


def in_process(
    model_dir: Path, graphs: dict[str, Path], seconds: float, rounds: int
) -> dict[str, float]:
    """Rates keyed runtime@batch/tTHREADS. Both 1 and 2 threads: on a loaded machine torch's
    OpenMP threads lose much time waiting for each other, so one thread can win."""
    from scibert_pack.handlers.int8 import int8_logits

    model, tokenizer = load_pretrained(model_dir)
    classifier = Classifier.create(model, tokenizer, HandlerSettings(), torch.device("cpu"))
    int8 = int8_logits(classifier.model)
    sessions = {
        (runtime, threads): OnnxLogits.load(path, threads)
        for runtime, path in graphs.items()
        for threads in THREADS
    }

    def torch_step(texts: list[str]) -> None:
        classifier.probabilities(classifier.tokenize(texts).inputs)

    def int8_step(texts: list[str]) -> None:
        with torch.inference_mode():
            torch.softmax(int8(classifier.tokenize(texts).inputs), dim=-1)

    rates: dict[str, float] = {}
    for _ in range(rounds):
        for threads in THREADS:
            torch.set_num_threads(threads)
            steps: list[tuple[str, Callable[[list[str]], None], tuple[int, ...]]] = [
                ("torch", torch_step, TORCH_SIZES),
                ("torch-int8", int8_step, SIZES),
            ]
            for runtime in graphs:
                session = sessions[(runtime, threads)]

                def onnx_step(texts: list[str], session: OnnxLogits = session) -> None:
                    torch.softmax(session(classifier.tokenize(texts).inputs), dim=-1)

                steps.append((runtime, onnx_step, SIZES))
            for key, step, sizes in steps:
                for size in sizes:
                    name = f"{key}@{size}/t{threads}"
                    rates[name] = max(rates.get(name, 0.0), rate(step, size, seconds))
    return rates


def best_of(rates: dict[str, float], prefix: str) -> tuple[float, str]:
    """The best rate whose key starts with `prefix`, and its key."""
    key = max((k for k in rates if k.startswith(prefix)), key=rates.__getitem__)
    return rates[key], key


def measure(model_dir: Path, name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    stores: dict[str, tuple[Path, dict[str, Any], float]] = {}
    for runtime in RUNTIMES:
        log(f"[{name}] build --runtime {runtime}")
        handler = HandlerSettings(runtime=runtime)  # type: ignore[arg-type]
        # Measure the int8 runtimes whatever their agreement (reported): no refusal here.
        settings = BuildSettings(
            name=name, profile="local", handler=handler, min_label_agreement=0.0
        )
        result = build(model_dir, settings, work / runtime)
        stores[runtime] = (result.output, result.report, result.seconds)
    graphs = {}
    for runtime in ("onnx", "onnx-int8"):
        graph = work / f"{runtime}.onnx"
        with zipfile.ZipFile(stores[runtime][0] / "model-store" / f"{name}.mar") as archive:
            graph.write_bytes(archive.read(onnx_file(runtime)))
        graphs[runtime] = graph
    log(f"[{name}] in process")
    rates = in_process(model_dir, graphs, args.seconds, args.rounds)
    cold = {}
    for runtime in RUNTIMES:
        cold[runtime] = cold_start(stores[runtime][0], work / f"cold-{runtime}")
        log(f"[{name}] cold start {runtime}: {cold[runtime]:.1f} s")
    runs: dict[tuple[str, int], list[Load]] = {}
    if not args.no_served:
        with contextlib.ExitStack() as stack:
            servers = {
                runtime: stack.enter_context(served(stores[runtime][0], work / f"run-{runtime}"))
                for runtime in RUNTIMES
            }
            for round_ in range(args.rounds):
                for runtime in RUNTIMES:
                    for per_request in PER_REQUEST:
                        got = load(servers[runtime], args.served_seconds, per_request)
                        runs.setdefault((runtime, per_request), []).append(got)
                        log(f"[{name}] {runtime} x{per_request} round {round_ + 1}: {got}")
    return {
        "rates": rates,
        "cold": cold,
        "builds": {r: {"report": rep, "seconds": s} for r, (_, rep, s) in stores.items()},
        "served": {
            f"{runtime}x{per}": Load.median(loads) for (runtime, per), loads in runs.items()
        },
    }


def render_model(label: str, m: dict[str, Any], args: argparse.Namespace) -> list[str]:
    rates = m["rates"]
    best, best_key = best_of(rates, "torch@")
    rows = []
    for runtime in RUNTIMES:
        for size in SIZES:
            r, key = best_of(rates, f"{runtime}@{size}/")
            threads = key.rsplit("/t", 1)[1]
            rows.append(f"| {runtime} | {size} | {threads} | {r:.1f} | {r / best:.2f}x |")
    served_rows = []
    for runtime in RUNTIMES:
        report = m["builds"][runtime]["report"]
        line = (
            f"| {runtime} | {report['archive']['size'] / 1e6:.1f} MB | {m['cold'][runtime]:.1f} s "
            f"| {m['builds'][runtime]['seconds']:.1f} s |"
        )
        for per in PER_REQUEST:
            got = m["served"].get(f"{runtime}x{per}")
            if got is None:
                line += " - | - |"
            else:
                line += f" {got.texts_per_s:.1f} (p99 {got.p99_ms:.0f} ms) | "
                line += f"**{got.texts_per_s / best:.2f}x** |"
        served_rows.append(line)
    checks = []
    for runtime in RUNTIMES[1:]:
        check = m["builds"][runtime]["report"]["runtime_check"]
        checks.append(
            f"`{runtime}`: {check['checked_texts']} texts, labels agree "
            f"{check['label_agreement']:.1%}, largest probability difference "
            f"{check['max_probability_difference']:.1e}"
        )
    return [
        f"### {label}",
        "",
        f"In process (tokenize + forward of the blog sentence; torch best: {best_key}, "
        f"{best:.1f} texts/s):",
        "",
        "| runtime | batch | threads | texts/s | vs torch best |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Served (2 workers x 1 thread, batchSize 8, concurrency 16; ratio to the in-process "
        "torch best), archive (zip-store), cold start (serve to first answer), build time:",
        "",
        "| runtime | archive | cold start | build | texts/s, 1 text/request | vs torch "
        "in process | texts/s, 8 texts/request | vs torch in process |",
        "|---|---|---|---|---|---|---|---|",
        *served_rows,
        "",
        "Build-time checks against fp32 torch: " + "; ".join(checks) + ".",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--served-seconds", type=float, default=15.0)
    parser.add_argument("--no-served", action="store_true")
    # The demo classifier, not MiniLM with a random head: the int8 runtimes' label agreement
    # means something only on a trained classifier's margins (same compute either way).
    parser.add_argument("--models", default="minilm-demo,bert-base", help="Comma-separated.")
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    models = benchmark_models()
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-backends-", dir=CACHE) as tmp:
        for key in args.models.split(","):
            model_dir, label = models[key]()
            work = Path(tmp) / key
            work.mkdir()
            results[key] = (label, measure(model_dir, key.replace("-", ""), work, args))
    load_after = os.getloadavg()[0]
    body = [
        "## Prediction backends (`build --runtime`) (scripts/bench_backends.py)",
        "",
        f"Machine: {machine()}. 1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after. In process: best of {args.rounds} interleaved "
        f"{args.seconds:g}-s windows at 1 and 2 threads (the better shown). Served: all four "
        f"archives up at once, loaded in turn, median of {args.rounds} windows of "
        f"{args.served_seconds:g} s; client and server on the same machine.",
        "",
    ]
    for label, m in results.values():
        body += render_model(label, m, args)
    text = "\n".join(body).rstrip() + "\n"
    write_section("backends", text)
    print(text)
    json.dump({k: m["rates"] for k, (_, m) in results.items()}, sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main()
