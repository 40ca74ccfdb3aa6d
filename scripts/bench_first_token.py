"""The last layer finishing for the first token only (`build --trim-last-layer`, the default)
against the whole model (issue 15).

Per model, in one run:
  - in process: the classifier as transformers loads it, and a copy whose last layer finishes
    for the first token (handlers/first_token.py), checked over the demo corpus (every label
    equal, largest probability difference; batches of 16 and texts alone), then forward +
    softmax of the blog sentence at batch 1, 8 and 32 on 1 and 2 threads, and one explanation
    pass (forward, and backward to the embeddings, over 10 rows of the sentence), in
    interleaved windows, best of --rounds;
  - served: the default archive and one built with --no-trim-last-layer, up at once and loaded
    in turn (scripts/bench_variants.py), at concurrency 16 and 1, and a lone explanation.
Writes the `first_token` section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_first_token.py [--seconds 2] [--rounds 3] [--models minilm]
"""

from __future__ import annotations

import argparse
import copy
import os
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

from scibert_pack.handlers.first_token import first_token_last_layer
from scibert_pack.handlers.model import load_pretrained
from scibert_pack.handlers.settings import HandlerSettings

SIZES = (1, 8, 32)
THREADS = (1, 2)
CONCURRENCIES = (16, 1)


def in_process(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    model, tokenizer = load_pretrained(model_dir)
    model.eval().requires_grad_(False)
    cut = copy.deepcopy(model)
    if first_token_last_layer(cut) is None:
        raise SystemExit(f"{model_dir}: not a model the cut is made for")
    whole_logits, cut_logits = _Logits(model), _Logits(cut)
    out: dict[str, Any] = {
        "layers": model.config.num_hidden_layers,
        "check": check(whole_logits, cut_logits, tokenizer),
    }
    inputs = {size: _inputs(tokenizer, [BLOG_TEXT] * size) for size in SIZES}
    variants = {"whole": (whole_logits, model), "cut": (cut_logits, cut)}
    out["rates"] = in_process_rates(variants, inputs, THREADS, args.seconds, args.rounds)
    return out


def render(label: str, m: dict[str, Any], served: dict[str, Any]) -> list[str]:
    c = m["check"]
    lines = [
        f"### {label}",
        "",
        f"{m['layers']} layers. Answers against the whole model over the demo corpus "
        f"({c['texts']} texts, batches of 16 and alone): labels agree "
        f"{c['label_agreement']:.1%}, largest probability difference "
        f"{c['max_probability_difference']:.1e}.",
        "",
    ]
    lines += in_process_rows(
        m["rates"], ("whole", "cut"), ("whole model", "last layer cut"), SIZES, THREADS
    )
    lines += [
        "",
        "Served (2 workers x 1 thread, batchSize 8, one text per request; a lone explanation: "
        "tolerance mode, one text, after an idle gap):",
        "",
        *served_rows(served, CONCURRENCIES, memory=False),
    ]
    ratios = served_ratios(served, CONCURRENCIES)
    (on, off) = served.values()
    explain = off.lone_explain_ms / on.lone_explain_ms
    lines += ["", f"Cut / whole, served texts/s: {ratios}; lone explanation **{explain:.2f}x**."]
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
        variants = {
            "last layer cut (default)": {},
            "--no-trim-last-layer": {"handler": HandlerSettings(trim_last_layer=False)},
        }
        served = measure_variants(
            model_dir, label, variants, CONCURRENCIES, args.served_seconds, args.rounds
        )
        sections.append("\n".join(render(label, m, served)))
    after = os.getloadavg()[0]
    body = "\n\n".join(
        [
            "## Last layer, first token only (`build --trim-last-layer`, default) "
            "(scripts/bench_first_token.py)",
            f"Machine: {machine()}. 1-minute load average {before:.1f} before, {after:.1f} "
            "after. The blog sentence, tokenized once; served: median of "
            f"{args.rounds} alternating windows of {args.served_seconds:g} s.",
            *sections,
        ]
    )
    print(body)
    if not args.quick:
        write_section("first_token", body)


if __name__ == "__main__":
    main()
