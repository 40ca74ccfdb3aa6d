"""PyTorch's compilers as an exact prediction path: faster than eager? (issue 15, goal 1)

Per model (MiniLM-L6 with a random 5-label head, and a bert-base-sized random model), compiles
the classifier's forward pass with
  - `aoti`: torch.export (dynamic batch and sequence) + AOTInductor (`aoti_compile_and_package`,
    what a build would do; loaded with `aoti_load_package`, no compiler needed to serve);
  - `aoti-frozen`: the same with inductor's freezing (weights folded in as constants);
  - `aoti-autotune`: freezing + max-autotune (inductor's C++ GEMM template against MKL/oneDNN);
  - `jit`: torch.jit.trace + torch.jit.freeze + optimize_for_inference (oneDNN fusions);
records each compile's time, checks each against eager over the demo corpus (batches of 16
padded to their longest, and one text at a time: every label equal, largest probability
difference), then measures in process forward + softmax of the blog sentence (tokenized once:
tokenizing costs every path the same) at batch 1, 8 and 32 and 1 and 2 threads, every path in
interleaved windows (eager, aoti, ..., eager, aoti, ...), best of --rounds; and, at one
thread, the share of eager's forward spent in its Linear layers and their GFLOP/s against one
large fp32 matmul (the ceiling of any path that keeps fp32 GEMMs).
Writes the `compile` section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_compile.py [--seconds 2] [--rounds 3] [--models minilm,bert-base]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A build compiles once, with no cache from an earlier run: time it that way.
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch
from bench import BLOG_TEXT, CACHE, benchmark_models, log
from benchlib import machine, write_section

from scibert_pack.demo.corpus import load_corpus
from scibert_pack.handlers.model import load_pretrained

SIZES = (1, 8, 32)
THREADS = (1, 2)
PATHS = ("eager", "aoti", "aoti-frozen", "aoti-autotune", "jit")
Logits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _Logits(torch.nn.Module):  # type: ignore[misc]
    """The classifier's logits from positional tensors: what export and trace need."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.logits


def _inputs(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, ...]:
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=512, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]


def compile_aoti(
    module: _Logits,
    example: tuple[torch.Tensor, ...],
    out: Path,
    *,
    frozen: bool,
    autotune: bool = False,
) -> Logits:
    import torch._inductor
    import torch._inductor.config as inductor_config

    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("seq", min=2, max=512)
    shapes = {
        name: {0: batch, 1: seq} for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
    # dynamic_threads: kernels read the OpenMP thread count when they run, not the one the
    # build had (a worker's share of the CPUs is only known when it starts).
    # autotune: inductor's own C++ GEMM template (AVX-512/AMX) competes with oneDNN/MKL per shape.
    patch: dict[str, Any] = {"freezing": frozen, "cpp.dynamic_threads": True}
    if autotune:
        patch |= {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}
    with inductor_config.patch(patch):
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(out))
    runner = torch._inductor.aoti_load_package(path)
    return lambda *args: runner(*args)


def compile_jit(module: _Logits, example: tuple[torch.Tensor, ...]) -> Logits:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    return lambda *args: frozen(*args)


def check(eager: Logits, other: Logits, tokenizer: Any) -> dict[str, float]:
    """Labels equal and largest probability difference over the demo corpus, batched and alone."""
    corpus = load_corpus()
    texts = [e.text for e in (*corpus.train, *corpus.held_out)]
    batches = [texts[i : i + 16] for i in range(0, len(texts), 16)] + [[t] for t in texts[:40]]
    same, total, worst = 0, 0, 0.0
    with torch.inference_mode():
        for batch in batches:
            inputs = _inputs(tokenizer, batch)
            a = torch.softmax(eager(*inputs), dim=-1)
            b = torch.softmax(other(*inputs), dim=-1)
            worst = max(worst, float((a - b).abs().max()))
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += len(batch)
    return {"label_agreement": same / total, "max_probability_difference": worst, "texts": total}


def rate(step: Logits, inputs: tuple[torch.Tensor, ...], seconds: float) -> float:
    size = int(inputs[0].shape[0])
    with torch.inference_mode():
        torch.softmax(step(*inputs), dim=-1)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.softmax(step(*inputs), dim=-1)
            done += size
    return done / (time.perf_counter() - start)


def best_seconds(step: Callable[[], object], seconds: float) -> float:
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    return (time.perf_counter() - start) / done


def _gemm_share(model: Any, inputs: tuple[torch.Tensor, ...], args: argparse.Namespace) -> Any:
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def record(m: Any, args_: tuple[torch.Tensor, ...], _out: object) -> None:
        calls.append((args_[0].clone(), m.weight, m.bias))

    hooks = [
        m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Linear)
    ]
    with torch.inference_mode():
        model(*inputs)
    for hook in hooks:
        hook.remove()
    flops = sum(2 * x.numel() // x.shape[-1] * w.numel() for x, w, _ in calls)

    def forward() -> None:
        with torch.inference_mode():
            model(*inputs)

    def gemms() -> None:
        with torch.inference_mode():
            for x, w, bias in calls:
                torch.nn.functional.linear(x, w, bias)

    best = {"forward": float("inf"), "linear": float("inf")}
    for _ in range(args.rounds):
        for key, step in (("forward", forward), ("linear", gemms)):
            best[key] = min(best[key], best_seconds(step, args.seconds))
    return {
        "tokens": int(inputs[0].shape[1]),
        "forward_ms": best["forward"] * 1e3,
        "linear_ms": best["linear"] * 1e3,
        "linear_gflops": flops / best["linear"] / 1e9,
    }


def gemm_ceiling(model: Any, tokenizer: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Why no exact path gains much: at one thread, the share of eager's forward spent in its
    Linear layers alone (the same inputs and weights through F.linear), their GFLOP/s and the
    GFLOP/s of one large fp32 matmul (this core's practical peak). fp32 keeps these GEMMs, so a
    compiler wins only the rest, unless its GEMM kernels beat MKL/oneDNN's."""
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    a, b = torch.randn(2048, 1024), torch.randn(1024, 1024)
    matmul = min(best_seconds(lambda: torch.mm(a, b), args.seconds) for _ in range(args.rounds))
    out["peak_gflops"] = 2 * a.shape[0] * a.shape[1] * b.shape[1] / matmul / 1e9
    for size in SIZES:
        out[str(size)] = _gemm_share(model, _inputs(tokenizer, [BLOG_TEXT] * size), args)
    return out


def measure(model_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    model, tokenizer = load_pretrained(model_dir)
    model.eval()
    module = _Logits(model).eval()
    example = _inputs(tokenizer, [BLOG_TEXT, BLOG_TEXT + " And a longer second text."])
    paths: dict[str, Logits] = {"eager": lambda *a: module(*a)}
    compile_seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    torch.set_num_threads(2)
    for name in args.paths.split(","):
        if name == "eager":
            continue
        log(f"compile {name}")
        start = time.perf_counter()
        try:
            if name == "jit":
                paths[name] = compile_jit(module, example)
            else:
                out = work / f"{name}.pt2"
                paths[name] = compile_aoti(
                    module,
                    example,
                    out,
                    frozen=name != "aoti",
                    autotune=name == "aoti-autotune",
                )
        except Exception as exc:  # a failed compile is a result to report, not a crash
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            log(f"{name} failed: {errors[name]}")
            continue
        compile_seconds[name] = time.perf_counter() - start
        log(f"{name}: {compile_seconds[name]:.1f} s")
    checks = {
        name: check(paths["eager"], fn, tokenizer) for name, fn in paths.items() if name != "eager"
    }
    for name, got in checks.items():
        log(f"{name} check: {got}")
    log(f"GEMM share, load {os.getloadavg()[0]:.2f}")
    ceiling = gemm_ceiling(module, tokenizer, args)
    rates: dict[str, float] = {}
    blog = {size: _inputs(tokenizer, [BLOG_TEXT] * size) for size in SIZES}
    for round_ in range(args.rounds):
        log(f"round {round_ + 1}, load {os.getloadavg()[0]:.2f}")
        for threads in THREADS:
            torch.set_num_threads(threads)
            for size in SIZES:
                for name, fn in paths.items():
                    key = f"{name}@{size}/t{threads}"
                    rates[key] = max(rates.get(key, 0.0), rate(fn, blog[size], args.seconds))
    return {
        "rates": rates,
        "compile_seconds": compile_seconds,
        "checks": checks,
        "errors": errors,
        "ceiling": ceiling,
    }


def render(label: str, m: dict[str, Any]) -> list[str]:
    rates = m["rates"]
    names = [p for p in PATHS if any(k.startswith(f"{p}@") for k in rates)]
    rows = []
    for threads in THREADS:
        for size in SIZES:
            eager = rates[f"eager@{size}/t{threads}"]
            got = [rates[f"{n}@{size}/t{threads}"] for n in names]
            cells = [f"{r:.1f} ({r / eager:.2f}x)" for r in got]
            rows.append(f"| {size} | {threads} | " + " | ".join(cells) + " |")
    checks = [
        f"`{n}`: compile {m['compile_seconds'][n]:.0f} s, labels agree "
        f"{c['label_agreement']:.1%} of {c['texts']}, largest probability difference "
        f"{c['max_probability_difference']:.1e}"
        for n, c in m["checks"].items()
    ]
    failed = [f"`{n}` failed: {e}" for n, e in m["errors"].items()]
    ceiling = m["ceiling"]
    shares = [
        f"batch {size} ({c['tokens']} tokens): {c['linear_ms'] / c['forward_ms']:.0%} of "
        f"{c['forward_ms']:.1f} ms at {c['linear_gflops']:.0f} GFLOP/s"
        for size, c in ((s, ceiling[str(s)]) for s in SIZES)
    ]
    return [
        f"### {label}",
        "",
        "| batch | threads | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
        *rows,
        "",
        "; ".join(checks + failed) + ".",
        "",
        "Eager's time in its Linear layers alone, 1 thread (one 2048x1024x1024 fp32 matmul: "
        f"{ceiling['peak_gflops']:.0f} GFLOP/s): " + "; ".join(shares) + ".",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="minilm,bert-base", help="Comma-separated.")
    parser.add_argument("--paths", default=",".join(PATHS), help="Comma-separated.")
    parser.add_argument("--no-write", action="store_true", help="Print only, keep BENCHMARKS.md.")
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    models = benchmark_models()
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-compile-", dir=CACHE) as tmp:
        for key in args.models.split(","):
            model_dir, label = models[key]()
            work = Path(tmp) / key
            work.mkdir()
            log(f"[{key}]")
            results[key] = (label, measure(model_dir, work, args))
    load_after = os.getloadavg()[0]
    body = [
        "## PyTorch compilers vs eager, in process (scripts/bench_compile.py)",
        "",
        f"Machine: {machine()}. 1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after. Forward + softmax of the blog sentence (tokenized once), "
        f"texts/s, best of {args.rounds} interleaved {args.seconds:g}-s windows; in brackets "
        "the ratio to eager at the same batch and threads.",
        "",
    ]
    for label, m in results.values():
        body += render(label, m)
    text = "\n".join(body).rstrip() + "\n"
    if not args.no_write:
        write_section("compile", text)
    print(text)
    json.dump({k: m for k, (_, m) in results.items()}, sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main()
