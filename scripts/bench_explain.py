"""Explain benchmark: served explanations vs transformers-interpret, speed and fidelity together.

For MiniLM-L6 and a SciBERT-sized (bert-base) model, in one run:
1. Convergence per step in process, by Captum integration rule: |delta| and Pearson r of the
   token importances against a 300-step reference of the same rule.
2. Served over HTTP (KServe v2 explain, the default archive (tolerance mode) with
   --lend-idle-cpus), seconds per text for
   1 text per request and 8 texts in one request, against transformers-interpret at its default
   50 steps (one text per call), interleaved; Pearson r of each against a 300-step reference of
   its own method, and |delta|.
3. Predict under load with an explanation now and then: the default archive vs the same with
   --lend-idle-cpus (a lone explanation borrows the idle sibling worker's CPUs), alternating
   windows.

Run: .venv/bin/python scripts/bench_explain.py [--quick]. Writes its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BLOG_TEXT, CACHE, demo_model, load, log, served
from bench_build import scibert_sized_model
from benchlib import machine, write_section

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TEXTS = [
    BLOG_TEXT,
    "The protein folds into a stable beta sheet at low temperature.",
    "We propose a new algorithm for sparse matrix factorization on GPUs.",
    "Patients receiving the drug showed reduced blood pressure after six weeks of treatment.",
    "Quantum entanglement between distant photons was measured.",
    "Catalytic oxidation of methane over palladium nanoparticles yields formaldehyde.",
    "Deep convolutional networks classify histology slides of breast tumours.",
    "Sea surface temperature anomalies drive rainfall variability in the tropics.",
]
RULES = ("gausslegendre", "riemann_middle", "riemann_trapezoid")
STEPS = (4, 8, 12, 16, 32)
REFERENCE_STEPS = 300
# Warm-up rounds of every request kind before timing (two workers serve the model).
WARMUP = 2


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    import torch

    return float(torch.corrcoef(torch.tensor([list(a), list(b)]))[0, 1])


class Ours:
    """The handler's explain functions in process: targets and references."""

    def __init__(self, model_dir: Path, texts: Sequence[str]) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from scibert_pack.handlers.model import Classifier
        from scibert_pack.handlers.settings import HandlerSettings

        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.classifier = Classifier.create(
            model, tokenizer, HandlerSettings(), torch.device("cpu")
        )
        self.texts = list(texts)
        self.batch = self.classifier.tokenize(self.texts)
        probabilities = self.classifier.probabilities(self.batch.inputs)
        self.targets = [int(row.argmax()) for row in probabilities]

    def explain(self, rule: str, steps: int) -> list[Any]:
        from scibert_pack.handlers.explain import ExplainJob, explain

        job = ExplainJob(
            tuple(range(len(self.texts))),
            tuple(self.targets),
            steps,
            64,
            4096,
            method=rule,  # type: ignore[arg-type]
        )
        return explain(self.classifier, self.batch, job)


@dataclass(frozen=True)
class Convergence:
    rule: str
    steps: int
    max_delta: float
    median_delta: float
    min_r: float


def convergence(
    ours: Ours, rules: Sequence[str], steps_list: Sequence[int]
) -> tuple[list[Convergence], dict[str, list[Any]]]:
    rows: list[Convergence] = []
    references: dict[str, list[Any]] = {}
    for rule in rules:
        log(f"  {rule}: {REFERENCE_STEPS}-step reference")
        reference = references[rule] = ours.explain(rule, REFERENCE_STEPS)
        for steps in steps_list:
            got = ours.explain(rule, steps)
            deltas = [abs(e.delta) for e in got]
            r = [
                pearson(e.importances, ref.importances)
                for e, ref in zip(got, reference, strict=True)
            ]
            rows.append(Convergence(rule, steps, max(deltas), statistics.median(deltas), min(r)))
    return rows, references


class Theirs:
    """transformers-interpret's SequenceClassificationExplainer, one text per call."""

    def __init__(self, model_dir: Path) -> None:
        from importlib.metadata import version

        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers_interpret import SequenceClassificationExplainer

        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        self.explainer = SequenceClassificationExplainer(
            model, AutoTokenizer.from_pretrained(model_dir)
        )
        self.label = f"transformers-interpret {version('transformers-interpret')}"

    def run(self, text: str, target: int, steps: int = 50) -> tuple[list[float], float]:
        self.explainer(text, index=target, n_steps=steps)
        attributions = self.explainer.attributions
        assert attributions is not None
        return [s for _, s in attributions.word_attributions], float(attributions.delta)


@dataclass(frozen=True)
class Served:
    model: str
    theirs_label: str
    theirs_1: float
    theirs_8: float
    ours_1: float
    ours_8: float
    ours_explicit50_1: float
    theirs_r: float  # min over texts, against their own 300 steps
    ours_r: float  # min over texts, against our 300 steps of the tolerance mode's rule
    theirs_delta: tuple[float, float]  # median, max of |delta|
    ours_delta: tuple[float, float]
    ours_steps: tuple[int, ...]
    converged: int
    checked: int  # texts whose fidelity (r, delta) was measured


def served_compare(
    model_dir: Path, label: str, ours: Ours, references: dict[str, list[Any]], reps: int
) -> Served:
    import requests

    from scibert_pack.archiver.build import build
    from scibert_pack.archiver.settings import BuildSettings
    from scibert_pack.handlers.explain import TOLERANCE_METHOD
    from scibert_pack.handlers.settings import HandlerSettings

    theirs = Theirs(model_dir)
    targets = Ours(model_dir, TEXTS).targets
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp:
        # Default settings but a long response timeout: on a busy machine the explain budget
        # (half of it) could refuse the 8-text request, and this measures speed, not the budget.
        store = Path(tmp) / "store"
        handler = HandlerSettings(lend_idle_cpus=True)
        settings = BuildSettings(name="m", profile="local", response_timeout_s=600, handler=handler)
        build(model_dir, settings, store)
        with served(store, Path(tmp) / "run") as server:
            url = f"{server.inference_url}/v2/models/{server.model_name}/explain"
            session = requests.Session()

            def ask(texts: Sequence[str], first: int, **params: Any) -> list[dict[str, Any]]:
                payload = {
                    "inputs": [
                        {
                            "name": "text",
                            "shape": [len(texts)],
                            "datatype": "BYTES",
                            "data": list(texts),
                        }
                    ],
                    "parameters": {"granularity": "pieces", **params},
                }
                if len(texts) == 1:
                    payload["parameters"]["target"] = targets[first]
                reply = session.post(url, json=payload, timeout=600)
                reply.raise_for_status()
                return list(reply.json()["outputs"][0]["data"])

            # Each text against its own predicted target: 8 texts in one request explain the
            # predicted class of each, which is what `targets` holds.
            # Warm-up: every request kind WARMUP times, so that each of the two workers has run
            # each shape (Captum's import and the first passes are a worker's one-time cost,
            # not an explanation's), and transformers-interpret alike.
            for _ in range(WARMUP):
                ask(TEXTS[:1], 0)
                ask(TEXTS[:1], 0, n_steps=50)
                ask(TEXTS, 0)
                theirs.run(TEXTS[0], targets[0])
            times: dict[str, list[float]] = {k: [] for k in ("t1", "o1", "o50", "t8", "o8")}

            def all_theirs() -> None:
                for text, target in zip(TEXTS, targets, strict=True):
                    theirs.run(text, target)

            for rep in range(reps):  # interleaved
                i = rep % len(TEXTS)
                one, target = TEXTS[i : i + 1], targets[i]
                times["t1"].append(_timed(lambda: theirs.run(one[0], target)))  # noqa: B023
                times["o1"].append(_timed(lambda: ask(one, i)))  # noqa: B023
                times["o50"].append(_timed(lambda: ask(one, i, n_steps=50)))  # noqa: B023
                times["t8"].append(_timed(all_theirs) / 8)
                times["o8"].append(_timed(lambda: ask(TEXTS, 0)) / 8)
            answers = ask(TEXTS, 0)
    ours_r, ours_d, theirs_r, theirs_d = [], [], [], []
    checked = answers[: len(ours.texts)]  # the texts with a 300-step reference
    for k, (item, ref) in enumerate(zip(checked, references[TOLERANCE_METHOD], strict=True)):
        assert item["words"] == ref.words, (item["words"], ref.words)
        ours_r.append(pearson(item["importances"][1:-1], ref.importances[1:-1]))
        ours_d.append(abs(item["delta"]))
        scores, delta = theirs.run(TEXTS[k], targets[k])
        reference, _ = theirs.run(TEXTS[k], targets[k], REFERENCE_STEPS)
        theirs_r.append(pearson(scores[1:-1], reference[1:-1]))
        theirs_d.append(abs(delta))
    med = {k: statistics.median(v) for k, v in times.items()}
    return Served(
        label, theirs.label, med["t1"], med["t8"], med["o1"], med["o8"], med["o50"],
        min(theirs_r), min(ours_r),
        (statistics.median(theirs_d), max(theirs_d)), (statistics.median(ours_d), max(ours_d)),
        tuple(item["n_steps"] for item in answers), sum(bool(i["converged"]) for i in answers),
        len(checked),
    )  # fmt: skip


@dataclass(frozen=True)
class UnderLoad:
    lending: bool
    texts_per_s: float
    p99_ms: float
    explain_ms: float


def under_load(model_dir: Path, windows: int, seconds: float) -> list[UnderLoad]:
    """Predict load (concurrency 16) with one explain request every 0.5 s beside it: the
    default archive (no lending) vs the same with --lend-idle-cpus, in alternating windows."""
    from scibert_pack.archiver.build import build
    from scibert_pack.archiver.settings import BuildSettings
    from scibert_pack.handlers.settings import HandlerSettings

    results: list[UnderLoad] = []
    with tempfile.TemporaryDirectory(prefix="bench-explain-load-") as tmp:
        stores = {}
        for lending in (True, False):
            handler = HandlerSettings(lend_idle_cpus=True) if lending else HandlerSettings()
            out = Path(tmp) / f"store-{lending}"
            build(model_dir, BuildSettings(name="m", profile="local", handler=handler), out)
            stores[lending] = out
        for window in range(windows):
            for lending in (True, False) if window % 2 == 0 else (False, True):
                with served(stores[lending], Path(tmp) / f"run-{window}-{lending}") as server:
                    url = f"{server.inference_url}/v2/models/{server.model_name}/explain"
                    stop = threading.Event()
                    explain_s: list[float] = []
                    thread = threading.Thread(
                        target=_explain_now_and_then, args=(url, stop, explain_s), daemon=True
                    )
                    thread.start()
                    got = load(server, seconds)
                    stop.set()
                    thread.join()
                    results.append(
                        UnderLoad(lending, got.texts_per_s, got.p99_ms,
                                  1000 * statistics.median(explain_s or [float("nan")]))
                    )  # fmt: skip
    return results


def _explain_now_and_then(url: str, stop: threading.Event, seconds: list[float]) -> None:
    import requests

    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [BLOG_TEXT]}]}
    while not stop.wait(0.5):
        seconds.append(_timed(lambda: requests.post(url, json=body, timeout=60)))


def _timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def render(
    conv: dict[str, list[Convergence]],
    rows: list[Served],
    loads: list[UnderLoad],
    load_before: float,
    load_after: float,
    reps: int,
) -> str:
    from scibert_pack.handlers.explain import TOLERANCE_METHOD
    from scibert_pack.handlers.settings import DEFAULT_TOLERANCE, LADDER_START

    out = [
        "## Explain: served speed and fidelity vs transformers-interpret "
        "(scripts/bench_explain.py)",
        "",
        f"Texts: {len(TEXTS)} scientific sentences, each explained for its predicted class. Load "
        f"average (1 min) before/after the run: {load_before:.1f}/{load_after:.1f}.",
        "",
        "### Convergence per step, in process (pieces, Pearson r against 300 steps of the same "
        "rule)",
        "",
        "| model | rule | steps | max abs(delta) | median abs(delta) | min r |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, items in conv.items():
        for c in items:
            out.append(
                f"| {model} | {c.rule} | {c.steps} | {c.max_delta:.2e} | "
                f"{c.median_delta:.2e} | {c.min_r:.4f} |"
            )
    out += [
        "",
        f"### Served over HTTP (default archive + --lend-idle-cpus: tolerance mode, "
        f"{TOLERANCE_METHOD}, "
        f"abs(delta) <= {DEFAULT_TOLERANCE:g}, ladder from {LADDER_START} steps), median of "
        f"{reps}, interleaved, after {WARMUP} warm-up rounds of each request kind",
        "",
        "Baseline: transformers-interpret at its default 50 steps (Gauss-Legendre), one text per "
        "call, in process (no HTTP). Ours: KServe v2 `/explain`, HTTP included; 8 texts = one "
        "request. r: the least Pearson r over the texts between the token importances and a "
        "300-step reference of the same method; abs(delta): median / max over the texts.",
        "",
        "| model | what | s/text, 1 text | s/text, 8 texts | min r vs 300 steps | "
        "abs(delta) median / max | steps used |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for s in rows:
        out.append(
            f"| {s.model} | {s.theirs_label}, 50 steps | {s.theirs_1:.3f} | {s.theirs_8:.3f} | "
            f"{s.theirs_r:.4f} | {s.theirs_delta[0]:.2e} / {s.theirs_delta[1]:.2e} | 50 |"
        )
        out.append(
            f"| {s.model} | scibert-pack served, tolerance mode | {s.ours_1:.3f} | "
            f"{s.ours_8:.3f} | {s.ours_r:.4f} | {s.ours_delta[0]:.2e} / {s.ours_delta[1]:.2e} | "
            f"{', '.join(map(str, s.ours_steps))} ({s.converged}/{len(TEXTS)} converged) |"
        )
        if s.checked < len(TEXTS):
            out.append(
                f"| {s.model} | (r and abs(delta) over the first {s.checked} texts) | | | | | |"
            )
        out.append(
            f"| {s.model} | scibert-pack served, explicit n_steps 50 | {s.ours_explicit50_1:.3f} "
            "| | | | 50 |"
        )
    out.append("")
    for s in rows:
        one, eight = s.theirs_1 / s.ours_1, s.theirs_8 / s.ours_8
        fidelity = s.ours_r >= 0.99 and s.ours_delta[1] <= s.theirs_delta[1]
        met = "met" if min(one, eight) >= 3 and fidelity else "NOT met"
        out.append(
            f"- {s.model}: **{one:.2f}x** for 1 text, **{eight:.2f}x** per text for 8 texts "
            f"(goal 3x at r >= 0.99 and abs(delta) no worse: {met}; r {s.ours_r:.4f}, max "
            f"abs(delta) {s.ours_delta[1]:.2e} vs theirs {s.theirs_delta[1]:.2e})."
        )
    if loads:
        out += [
            "",
            "### Predict under load with an explanation every 0.5 s (MiniLM-L6, concurrency 16)",
            "",
            "Lending (--lend-idle-cpus): a lone explanation borrows the idle sibling worker's "
            "CPUs. Off: the default archive.",
            "",
            "| lending | infer texts/s | infer p99 (ms) | explain latency, median (ms) |",
            "|---|---:|---:|---:|",
        ]
        for lending in (True, False):
            mine = [x for x in loads if x.lending == lending]
            out.append(
                f"| {'on' if lending else 'off (default)'} | "
                f"{statistics.median(x.texts_per_s for x in mine):.1f} | "
                f"{statistics.median(x.p99_ms for x in mine):.0f} | "
                f"{statistics.median(x.explain_ms for x in mine):.0f} |"
            )
    out += ["", f"Machine: {machine()}."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--no-load", action="store_true", help="skip the predict-under-load part")
    args = parser.parse_args()
    reps = 5 if args.quick else 9
    load_before = os.getloadavg()[0]
    models = [
        demo_model(),
        (scibert_sized_model(CACHE / "scibert-sized"), "SciBERT-sized (bert-base, random weights)"),
    ]
    conv: dict[str, list[Convergence]] = {}
    rows: list[Served] = []
    for number, (model_dir, label) in enumerate(models):
        log(f"[{label}] convergence per step")
        # --quick: 300-step references of a bert-base for 3 texts only (they take minutes).
        ours = Ours(model_dir, TEXTS[:3] if args.quick and number else TEXTS)
        if args.quick:
            conv[label], references = convergence(ours, RULES[:2], (8, 16))
        else:
            conv[label], references = convergence(ours, RULES, STEPS)
        log(f"[{label}] served vs transformers-interpret")
        rows.append(served_compare(model_dir, label, ours, references, reps))
    loads: list[UnderLoad] = []
    if not args.no_load:
        log("[MiniLM-L6] predict under load, lending on/off")
        loads = under_load(models[0][0], 2 if args.quick else 4, 8.0 if args.quick else 15.0)
    text = render(conv, rows, loads, load_before, os.getloadavg()[0], reps)
    print(text)
    write_section("bench_explain", text)


if __name__ == "__main__":
    sys.exit(main())
