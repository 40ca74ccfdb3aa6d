"""`build --runtime torch-int8` / `onnx-int8`: measure the int8 model against fp32, refuse a
poor one.

Dynamic int8 quantization is approximate: the build runs the int8 model the worker will run
(handlers/int8.py's quantization step; for onnx-int8 the graph the archive ships) on the held-out
split of the shipped demo corpus and reports how often its label is fp32's and the largest
probability difference; below --min-label-agreement the build fails. The default, 0.98, lets at
most 1 of the 84 held-out texts change label: a flip there is a near-tie, more says the
quantization moves real decisions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scibert_pack.archiver.onnx_export import agreement
from scibert_pack.demo.corpus import load_corpus
from scibert_pack.errors import BuildError
from scibert_pack.handlers.int8 import EXPLAINED_WITH, int8_logits
from scibert_pack.handlers.model import Classifier, ModelLoadError, load_pretrained
from scibert_pack.handlers.settings import HandlerSettings

DEFAULT_MIN_LABEL_AGREEMENT = 0.98


def check_int8(model_dir: Path, handler: HandlerSettings, min_agreement: float) -> dict[str, Any]:
    """The build report's runtime_check of an int8 build; BuildError below `min_agreement`."""
    try:
        model, tokenizer = load_pretrained(model_dir, allow_pickle=handler.allow_pickle)
    except ModelLoadError as err:
        raise BuildError(str(err), fix="build from a folder save_pretrained wrote") from err
    classifier = Classifier.create(model, tokenizer, handler, torch.device("cpu"))
    texts = [example.text for example in load_corpus().held_out]
    share, worst = agreement(classifier, int8_logits(classifier.model), texts)
    return judge("torch-int8", model_dir, share, worst, len(texts), min_agreement)


def judge(
    runtime: str, model_dir: Path, share: float, worst: float, texts: int, min_agreement: float
) -> dict[str, Any]:
    """The runtime_check of an int8 `runtime` that gave fp32 torch's label on `share` of `texts`
    held-out texts; BuildError below `min_agreement`."""
    if share < min_agreement:
        raise BuildError(
            f"the int8 model of {model_dir} ({runtime}) gives fp32's label on {share:.2%} of "
            f"{texts} held-out texts, below --min-label-agreement {min_agreement:g} (largest "
            f"probability difference {worst:.3f})",
            fix="build with --runtime onnx or torch (exact), or lower --min-label-agreement "
            "if these disagreements are acceptable",
        )
    return {
        "runtime": runtime,
        "checked_texts": texts,
        "label_agreement": share,
        "max_probability_difference": worst,
        "min_label_agreement": min_agreement,
        "explained_with": EXPLAINED_WITH,
    }
