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
from pathlib import Path
from typing import Any

from bench import BLOG_TEXT, benchmark_models, log
from bench_compile import _inputs, _Logits, check
from bench_variants import (
    in_process_rates,
    in_process_rows,
    measure_variants,
    served_ratios,
    served_rows,
)
from benchlib import machine, write_section

from scibert_pack.handlers.model import load_pretrained
from scibert_pack.handlers.packed import pack_linear_layers
from scibert_pack.handlers.settings import HandlerSettings

SIZES = (1, 8)
THREADS = (1, 2)
CONCURRENCIES = (16, 1)


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
    variants = {"plain": (plain_logits, model), "packed": (packed_logits, packed)}
    out["rates"] = in_process_rates(variants, inputs, THREADS, args.seconds, args.rounds)
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
    ]
    lines += in_process_rows(
        m["rates"], ("plain", "packed"), ("nn.Linear", "packed"), SIZES, THREADS
    )
    if served:
        lines += [
            "",
            "Served (2 workers x 1 thread, batchSize 8, one text per request; memory: each "
            "worker's resident memory from the management API):",
            "",
            *served_rows(served, CONCURRENCIES, memory=True),
        ]
        ratios = served_ratios(served, CONCURRENCIES)
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
