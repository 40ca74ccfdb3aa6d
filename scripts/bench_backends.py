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

RUNTIMES = ("torch", "onnx")
SIZES = (1, 8)


def rate(step: Callable[[list[str]], object], size: int, seconds: float) -> float:
    texts = [BLOG_TEXT] * size
    step(texts)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(texts)
        done += size
    return done / (time.perf_counter() - start)


def in_process(model_dir: Path, onnx_file: Path, seconds: float, rounds: int) -> dict[str, float]:
    model, tokenizer = load_pretrained(model_dir)
    classifier = Classifier.create(model, tokenizer, HandlerSettings(), torch.device("cpu"))
    onnx = OnnxLogits.load(onnx_file, torch.get_num_threads())

    def torch_step(texts: list[str]) -> None:
        classifier.probabilities(classifier.tokenize(texts).inputs)

    def onnx_step(texts: list[str]) -> None:
        inputs = classifier.tokenize(texts).inputs
        torch.softmax(onnx(inputs), dim=-1)

    rates: dict[str, float] = {}
    for _ in range(rounds):
        for key, step, sizes in (
            ("torch", torch_step, (1, 4, 8, 16, 32)),
            ("onnx", onnx_step, SIZES),
        ):
            for size in sizes:
                name = f"{key}@{size}"
                rates[name] = max(rates.get(name, 0.0), rate(step, size, seconds))
    return rates


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
            settings = BuildSettings(name="minilm", profile="local", handler=handler)
            result = build(model_dir, settings, Path(tmp) / runtime)
            stores[runtime] = (result.output, result.report, result.seconds)
        onnx_file = Path(tmp) / "export" / ONNX_FILE
        onnx_file.parent.mkdir()
        from scibert_pack.archiver.onnx_export import export_onnx

        export_onnx(model_dir, onnx_file, HandlerSettings(runtime="onnx"))
        rates = in_process(model_dir, onnx_file, args.seconds, args.rounds)
        best_size = max((1, 4, 8, 16, 32), key=lambda s: rates[f"torch@{s}"])
        best = rates[f"torch@{best_size}"]
        rows = []
        for runtime in RUNTIMES:
            for size in SIZES:
                r = rates[f"{runtime}@{size}"]
                rows.append(f"| {runtime} | {size} | {r:.1f} | {r / best:.2f}x |")
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
    body = "\n".join(
        [
            "## Prediction backends (`build --runtime`), MiniLM-L6 (scripts/bench_backends.py)",
            "",
            f"Machine: {machine()}. **Shared and loaded while measured** (1-minute load average "
            f"{load_avg:.1f} at the start, other sessions running): read the ratios, not the "
            "absolute figures, and only a clear margin repeated across runs.",
            "",
            f"In process, tokenize + forward of the blog sentence, best of {args.rounds} "
            f"interleaved {args.seconds:.0f}-s windows; ratio to torch eager at its best batch "
            f"size ({best_size}: {best:.1f} texts/s).",
            "",
            "| runtime | batch | texts/s | vs torch best |",
            "|---|---|---|---|",
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
            f"{check['max_probability_difference']:.1e} (tolerance {check['tolerance']:.0e}).",
        ]
    )
    write_section("backends", body)
    print(body)
    print(json.dumps(rates, indent=1))


if __name__ == "__main__":
    main()
