"""Helpers for the handler tests: briefly trained tiny classifiers and independent references.

A randomly initialised tiny model answers ~1/3 for every class whatever the text, which would let
explanation tests pass vacuously; a few optimiser steps on the tiny corpus make the outputs depend
on the words (probabilities move by tenths) while staying smooth enough for 50 IG steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import HandlerSettings
from support.fake_context import FakeContext, HttpRequest, Response, run_batch
from support.tiny_models import CORPUS

CORPUS_LABELS = (0, 0, 0, 1, 1, 2, 2, 2, 0, 1)  # biology, chemistry, physics per CORPUS line

# Limits low enough that the "too many / too long" requests stay small.
TEST_SETTINGS = HandlerSettings(
    max_length=32,
    max_texts_per_request=8,
    max_text_chars=500,
    max_explain_steps=100,
    max_explain_work=200,
)


def load_trained(folder: Path, steps: int = 40) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    torch.manual_seed(0)
    names = {"input_ids", "attention_mask"} | (
        {"token_type_ids"} if model.config.model_type == "bert" else set()
    )
    encoded = tokenizer(list(CORPUS), padding=True, return_tensors="pt")
    inputs = {k: v for k, v in encoded.items() if k in names}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = model(**inputs, labels=torch.tensor(CORPUS_LABELS)).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return model, tokenizer


@contextlib.contextmanager
def recorded_passes(model: Any, *, gradients_only: bool = False) -> Iterator[list[tuple[int, int]]]:
    """(rows, width) of the input_ids of every forward pass of `model` while inside; with
    `gradients_only`, of the passes that record gradients (Captum's, not predictions)."""
    shapes: list[tuple[int, int]] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if gradients_only and not torch.is_grad_enabled():
            return
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        shapes.append((int(ids.shape[0]), int(ids.shape[1])))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield shapes
    finally:
        handle.remove()


def make_service(
    model: Any, tokenizer: Any, settings: HandlerSettings = TEST_SETTINGS
) -> ClassifierService:
    return ClassifierService.from_model(model, tokenizer, settings, name="scibert", version="2.1")


def call(
    service: ClassifierService, requests: list[HttpRequest], metrics: Any = None
) -> list[Response]:
    context = FakeContext(model_name="scibert", model_version="2.1", metrics=metrics)
    return run_batch(service.handle, context, requests)


def answers(
    service: ClassifierService, texts: Sequence[str], *, explain: bool, **parameters: Any
) -> list[dict[str, Any]]:
    """The answers to one v1 request of `texts` (explanations by word piece), which must be a 200."""
    if explain:
        parameters = {"granularity": "pieces", **parameters}
    body: dict[str, Any] = {"texts": list(texts)}
    if parameters:
        body["parameters"] = parameters
    (response,) = call(service, [HttpRequest(body, explain=explain)])
    assert response.status == 200, response.body
    return list(response.body)


def assert_same_predictions(got: list[dict], want: list[dict], tolerance: float) -> None:
    for ours, theirs in zip(got, want, strict=True):
        assert ours["label"] == theirs["label"]
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=tolerance)


def assert_same_explanations(got: list[dict], want: list[dict], tolerance: float) -> None:
    for ours, theirs in zip(got, want, strict=True):
        assert ours["words"] == theirs["words"]
        assert ours["importances"] == pytest.approx(theirs["importances"], abs=tolerance)
        assert ours["delta"] == pytest.approx(theirs["delta"], abs=tolerance)
        assert ours["n_steps"] == theirs["n_steps"]


def reference_probabilities(model: Any, tokenizer: Any, text: str) -> list[float]:
    """The model's probabilities for one text on its own: no padding, no handler code."""
    encoded = tokenizer(text, truncation=True, max_length=TEST_SETTINGS.max_length)
    ids = torch.tensor([encoded["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return [float(p) for p in torch.softmax(logits, dim=-1)[0]]


def reference_tokens(tokenizer: Any, text: str) -> list[str]:
    ids = tokenizer(text, truncation=True, max_length=TEST_SETTINGS.max_length)["input_ids"]
    return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]


def target_probability(model: Any, tokenizer: Any, text: str, target: int) -> tuple[float, float]:
    """f(x) and f(baseline) for one unpadded text, written out from the documented definition.

    f = softmax probability of `target`; baseline = first and last token kept, every token between
    them replaced by pad ([CLS] [PAD]... [SEP] / <s> <pad>... </s>), at the input's positions.
    """
    ids = tokenizer(text, truncation=True, max_length=TEST_SETTINGS.max_length)["input_ids"]
    x = torch.tensor([ids])
    baseline = torch.tensor([[ids[0]] + [tokenizer.pad_token_id] * (len(ids) - 2) + [ids[-1]]])
    extra: dict[str, torch.Tensor] = {"attention_mask": torch.ones_like(x)}
    if model.config.model_type == "roberta":
        # RoBERTa numbers real tokens from pad_token_id + 1.
        start = model.config.pad_token_id + 1
        extra["position_ids"] = torch.arange(start, start + len(ids)).unsqueeze(0)
    with torch.no_grad():
        fx = torch.softmax(model(input_ids=x, **extra).logits, dim=-1)[0, target]
        fb = torch.softmax(model(input_ids=baseline, **extra).logits, dim=-1)[0, target]
    return float(fx), float(fb)
