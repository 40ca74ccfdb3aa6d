"""Prediction backends (`build --runtime`) on MiniLM-L6, side by side in one run.

In process: texts/s of tokenize + forward for torch eager (its best batch size, and at 1 and 8)
and for ONNX Runtime at 1 and 8, in interleaved windows (best of --rounds, so a burst of load
from other processes does not decide it), as ratios to torch's best. Served (unless --no-served):
texts/s at concurrency 16, one text per request, each archive's size and cold start.
Writes the `backends` section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_backends.py [--seconds 2] [--rounds 3] [--no-served]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from bench import BLOG_TEXT, cold_start, demo_model, load, served
from benchlib import machine, write_section

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.handlers.model import Classifier, load_pretrained
from scibert_pack.handlers.onnx_runtime import ONNX_FILE, OnnxLogits
from scibert_pack.handlers.settings import HandlerSettings

RUNTIMES = ("torch", "onnx", "torch-int8")
SIZES = (1, 8)
TORCH_SIZES = (1, 4, 8, 16, 32)
THREADS = (1, 2)


def rate(step: Callable[[list[str]], object], size: int, seconds: float) -> float:
    texts = [BLOG_TEXT] * size
    step(texts)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(texts)
        done += size
    return done / (time.perf_counter() - start)


def in_process(model_dir: Path, onnx_file: Path, seconds: float, rounds: int) -> dict[str, float]:
    """Rates keyed runtime@batch/tTHREADS. Both 1 and 2 threads: on a loaded machine torch's
    OpenMP threads lose much time waiting for each other, so one thread can win."""
    from scibert_pack.handlers.int8 import int8_logits

    model, tokenizer = load_pretrained(model_dir)
    classifier = Classifier.create(model, tokenizer, HandlerSettings(), torch.device("cpu"))
    int8 = int8_logits(classifier.model)
    sessions = {threads: OnnxLogits.load(onnx_file, threads) for threads in THREADS}

    def torch_step(texts: list[str]) -> None:
        classifier.probabilities(classifier.tokenize(texts).inputs)

    def int8_step(texts: list[str]) -> None:
        with torch.inference_mode():
            torch.softmax(int8(classifier.tokenize(texts).inputs), dim=-1)

    rates: dict[str, float] = {}
    for _ in range(rounds):
        for threads in THREADS:
            torch.set_num_threads(threads)
            onnx = sessions[threads]

            def onnx_step(texts: list[str], onnx: OnnxLogits = onnx) -> None:
                torch.softmax(onnx(classifier.tokenize(texts).inputs), dim=-1)

            steps = (("torch", torch_step, TORCH_SIZES), ("onnx", onnx_step, SIZES))
            for key, step, sizes in (*steps, ("torch-int8", int8_step, SIZES)):
                for size in sizes:
                    name = f"{key}@{size}/t{threads}"
                    rates[name] = max(rates.get(name, 0.0), rate(step, size, seconds))
    return rates


def best_of(rates: dict[str, float], prefix: str) -> tuple[float, str]:
    """The best rate whose key starts with `prefix`, and its key."""
    key = max((k for k in rates if k.startswith(prefix)), key=rates.__getitem__)
    return rates[key], key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--served-seconds", type=float, default=15.0)
    parser.add_argument("--no-served", action="store_true")
    args = parser.parse_args()
    model_dir, _ = demo_model()
    load_avg = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        stores = {}
        for runtime in RUNTIMES:
            handler = HandlerSettings(runtime=runtime)  # type: ignore[arg-type]
            # Measure int8 whatever its agreement (reported below): no refusal here.
            settings = BuildSettings(
                name="minilm", profile="local", handler=handler, min_label_agreement=0.0
            )
            result = build(model_dir, settings, Path(tmp) / runtime)
            stores[runtime] = (result.output, result.report, result.seconds)
        onnx_file = Path(tmp) / ONNX_FILE
        with zipfile.ZipFile(stores["onnx"][0] / "model-store" / "minilm.mar") as archive:
            onnx_file.write_bytes(archive.read(ONNX_FILE))
        rates = in_process(model_dir, onnx_file, args.seconds, args.rounds)
        best, best_key = best_of(rates, "torch@")
        rows = []
        for runtime in RUNTIMES:
            for size in SIZES:
                r, key = best_of(rates, f"{runtime}@{size}/")
                threads = key.rsplit("/t", 1)[1]
                rows.append(f"| {runtime} | {size} | {threads} | {r:.1f} | {r / best:.2f}x |")
        served_rows = []
        for runtime in RUNTIMES:
            output, report, seconds = stores[runtime]
            size_mb = report["archive"]["size"] / 1e6
            cold = cold_start(output, Path(tmp) / f"cold-{runtime}")
            line = f"| {runtime} | {size_mb:.1f} MB | {cold:.1f} s | {seconds:.1f} s |"
            if not args.no_served:
                with served(output, Path(tmp) / f"run-{runtime}") as server:
                    texts_s = load(server, args.served_seconds).texts_per_s
                line += f" {texts_s:.1f} | {texts_s / best:.2f}x |"
            else:
                line += " - | - |"
            served_rows.append(line)
        check = stores["onnx"][1]["runtime_check"]
        int8_check = stores["torch-int8"][1]["runtime_check"]
    body = "\n".join(
        [
            "## Prediction backends (`build --runtime`), MiniLM-L6 (scripts/bench_backends.py)",
            "",
            f"Machine: {machine()}. **Shared and loaded while measured** (1-minute load average "
            f"{load_avg:.1f} at the start, other sessions running): read the ratios, not the "
            "absolute figures, and only a clear margin repeated across runs.",
            "",
            f"In process, tokenize + forward of the blog sentence, best of {args.rounds} "
            f"interleaved {args.seconds:.0f}-s windows at 1 and at 2 threads (the better one "
            "shown); ratio to torch eager at its best batch size and thread count "
            f"({best_key}: {best:.1f} texts/s).",
            "",
            "| runtime | batch | threads | texts/s | vs torch best |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Archives (zip-store), cold start (serve to first answer), build time; served texts/s "
            "at concurrency 16, one text per request, ratio to the in-process torch best.",
            "",
            "| runtime | archive | cold start | build | served texts/s | vs in-process best |",
            "|---|---|---|---|---|---|",
            *served_rows,
            "",
            f"ONNX build-time check: {check['checked_texts']} texts, labels agree "
            f"{check['label_agreement']:.0%}, largest probability difference "
            f"{check['max_probability_difference']:.1e} (tolerance {check['tolerance']:.0e}). "
            f"int8 build-time check: {int8_check['checked_texts']} held-out texts, labels agree "
            f"{int8_check['label_agreement']:.1%}, largest probability difference "
            f"{int8_check['max_probability_difference']:.3f}.",
        ]
    )
    write_section("backends", body)
    print(body)
    print(json.dumps(rates, indent=1))


if __name__ == "__main__":
    main()
