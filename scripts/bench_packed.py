"""Prepacked Linear weights (`build --pack-weights`, the default) against nn.Linear (issue 15).

Per model, in one run:
  - in process: the classifier as transformers loads it, and a copy whose Linear layers of at
    least 768 features a side are packed (handlers/packed.py), checked over the demo corpus
    (every label equal, largest probability difference; batches of 16 and texts alone), then
    forward + softmax of the blog sentence at batch 1 and 8 on 1 and 2 threads, and one
    explanation pass (forward, and backward to the embeddings, over 10 rows of the sentence),
    in interleaved windows, best of --rounds; and the time packing takes;
  - served (models with packed layers): the default archive and one built with
    --no-pack-weights, up at once and loaded in turn (scripts/bench_variants.py), with each
    worker's memory.
Writes the `packed` section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_packed.py [--seconds 2] [--rounds 3] [--models bert-base]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench import BLOG_TEXT, benchmark_models, log
from bench_compile import _inputs, _Logits, best_seconds, check, rate
from bench_variants import load_cells, measure_variants
from benchlib import machine, write_section

from scibert_pack.handlers.model import load_pretrained
from scibert_pack.handlers.packed import pack_linear_layers
from scibert_pack.handlers.settings import HandlerSettings

SIZES = (1, 8)
THREADS = (1, 2)
EXPLAIN_ROWS = 10
CONCURRENCIES = (16, 1)


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


def in_process(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    model, tokenizer = load_pretrained(model_dir)
    model.eval().requires_grad_(False)
    packed = copy.deepcopy(model)
    started = time.perf_counter()
    layers = pack_linear_layers(packed)
    out: dict[str, Any] = {"layers": layers, "pack_s": time.perf_counter() - started}
    if not layers:
        return out
    plain_logits, packed_logits = _Logits(model), _Logits(packed)
    out["check"] = check(plain_logits, packed_logits, tokenizer)
    inputs = {size: _inputs(tokenizer, [BLOG_TEXT] * size) for size in SIZES}
    rates: dict[str, float] = {}
    for _ in range(args.rounds):
        for threads in THREADS:
            torch.set_num_threads(threads)
            for size in SIZES:
                for name, logits in (("plain", plain_logits), ("packed", packed_logits)):
                    key = f"{name}@{size}/t{threads}"
                    got = rate(logits, inputs[size], args.seconds)
                    rates[key] = max(rates.get(key, 0.0), got)
            for name, m in (("plain", model), ("packed", packed)):
                key = f"{name}@explain/t{threads}"
                got = 1.0 / best_seconds(explain_pass(m, inputs[1]), args.seconds)
                rates[key] = max(rates.get(key, 0.0), got)
    out["rates"] = rates
    return out


def render(label: str, m: dict[str, Any], served: dict[str, Any] | None) -> list[str]:
    lines = [f"### {label}", ""]
    if not m["layers"]:
        lines.append("No Linear layer is 768 features a side: nothing is packed, nothing changes.")
        return lines
    c = m["check"]
    lines += [
        f"{m['layers']} Linear layers packed in {m['pack_s']:.2f} s. Answers against nn.Linear "
        f"over the demo corpus ({c['texts']} texts, batches of 16 and alone): labels agree "
        f"{c['label_agreement']:.1%}, largest probability difference "
        f"{c['max_probability_difference']:.1e}.",
        "",
        "In process (texts/s; explanation pass: passes/s), best of interleaved windows:",
        "",
        "| what | threads | nn.Linear | packed | packed / nn.Linear |",
        "|---|---|---:|---:|---:|",
    ]
    rates = m["rates"]
    for what in (*(f"batch {s}" for s in SIZES), "explanation pass"):
        for threads in THREADS:
            key = what.split()[-1] if what.startswith("batch") else "explain"
            a, b = rates[f"plain@{key}/t{threads}"], rates[f"packed@{key}/t{threads}"]
            lines.append(f"| {what} | {threads} | {a:.1f} | {b:.1f} | **{b / a:.2f}x** |")
    if served:
        lines += [
            "",
            "Served (2 workers x 1 thread, batchSize 8, one text per request; memory: each "
            "worker's resident memory from the management API):",
            "",
            "| archive | "
            + " | ".join(f"concurrency {c}: texts/s (p50 / p99 ms)" for c in CONCURRENCIES)
            + " | lone explanation, median (ms) | worker memory (MB) |",
            "|---|" + "---|" * len(CONCURRENCIES) + "---:|---|",
        ]
        for name, result in served.items():
            memory = " / ".join(f"{mb:.0f}" for mb in result.worker_memory_mb)
            lines.append(
                f"| {name} | "
                + " | ".join(load_cells(result, CONCURRENCIES))
                + f" | {result.lone_explain_ms:.0f} | {memory} |"
            )
        (on, off) = served.values()
        ratios = ", ".join(
            f"concurrency {c}: **{on.load(c).texts_per_s / off.load(c).texts_per_s:.2f}x**"
            for c in CONCURRENCIES
        )
        lines += ["", f"Packed / not packed, served texts/s: {ratios}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = benchmark_models()
    parser.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=models)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--served-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="short windows (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.served_seconds = 0.3, 1, 2.0
    before = os.getloadavg()[0]
    sections: list[str] = []
    for key in args.models:
        model_dir, label = models[key]()
        log(f"[{label}] in process")
        m = in_process(model_dir, args)
        served = None
        if m["layers"]:
            variants = {
                "packed (default)": {},
                "--no-pack-weights": {"handler": HandlerSettings(pack_weights=False)},
            }
            served = measure_variants(
                model_dir, label, variants, CONCURRENCIES, args.served_seconds, args.rounds
            )
        sections.append("\n".join(render(label, m, served)))
    after = os.getloadavg()[0]
    body = "\n\n".join(
        [
            "## Prepacked Linear weights (`build --pack-weights`, default) "
            "(scripts/bench_packed.py)",
            f"Machine: {machine()}. 1-minute load average {before:.1f} before, {after:.1f} "
            "after. The blog sentence, tokenized once; served: median of "
            f"{args.rounds} alternating windows of {args.served_seconds:g} s.",
            *sections,
        ]
    )
    print(body)
    if not args.quick:
        write_section("packed", body)


if __name__ == "__main__":
    main()
