"""The last layer finishing for the first token only (handlers/first_token.py): the same
predictions and explanations as the whole model, for every architecture it is used on, and
left alone where it would not be the same."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from support.fake_context import FakeContext, HttpRequest, run_batch
from support.in_process_service import (
    TEST_SETTINGS,
    answers,
    assert_same_explanations,
    assert_same_predictions,
)
from support.tiny_models import Family

from scibert_pack.handlers.first_token import CUTS, cut_module, first_token_last_layer
from scibert_pack.handlers.service import ClassifierService

FAMILIES: list[Family] = ["bert", "roberta", "distilbert"]
TEXTS = [
    "risk assessment implications of site-specific oral relative bioavailability .",
    "quantum states of the photon decay in the magnetic field .",
    "cells divide",
]
WHOLE = replace(TEST_SETTINGS, trim_last_layer=False)

SMALL = {"vocab_size": 99, "num_labels": 3}
BERT_SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
BERT_SHAPE |= {"intermediate_size": 37}
# One tiny classifier per architecture the cut is made for (the tiny families above cover the
# tokenizers; these cover the rest of the list), and ones it must leave alone.
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bert": ("BertConfig", "BertForSequenceClassification", BERT_SHAPE),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", BERT_SHAPE),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification", BERT_SHAPE),
    "camembert": ("CamembertConfig", "CamembertForSequenceClassification", BERT_SHAPE),
    "electra": (
        "ElectraConfig",
        "ElectraForSequenceClassification",
        BERT_SHAPE | {"embedding_size": 16},
    ),
    "distilbert": (
        "DistilBertConfig",
        "DistilBertForSequenceClassification",
        {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37},
    ),
}


def build(config_name: str, model_name: str, shape: dict[str, Any]) -> Any:
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**SMALL, **shape)
    model = getattr(transformers, model_name)(config).eval()
    model.requires_grad_(False)
    return model


def inputs() -> dict[str, torch.Tensor]:
    """Three texts of different lengths, right-padded as the handler pads them."""
    torch.manual_seed(1)
    ids = torch.randint(5, 99, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids * mask + 1 * (1 - mask), "attention_mask": mask}


def logits_and_gradient(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits, and the gradient of the first class's logit sum at the embedding output (what
    integrated gradients reads)."""
    given = inputs()
    embeddings = model.get_input_embeddings()
    values = embeddings(given["input_ids"]).detach().requires_grad_(True)
    handle = embeddings.register_forward_hook(lambda *_: values)
    try:
        logits = model(**given).logits
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(logits[:, 0].sum(), values)
    return logits.detach(), gradient


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_the_cut_model_gives_the_whole_models_logits_and_gradients(architecture: str) -> None:
    whole = build(*ARCHITECTURES[architecture])
    cut = copy.deepcopy(whole)
    module = cut_module(cut)
    assert module is not None
    seen: list[tuple[int, ...]] = []
    module.register_forward_hook(lambda _m, _a, out: seen.append(tuple(out.shape)))
    assert first_token_last_layer(cut) is not None
    expected, expected_gradient = logits_and_gradient(whole)
    logits, gradient = logits_and_gradient(cut)
    assert seen == [(3, 1, 32)]  # the cut is made, and only in the last layer
    assert torch.allclose(logits, expected, atol=1e-6)
    assert torch.allclose(gradient, expected_gradient, atol=1e-6)
    assert gradient.abs().max() > 1e-4


def test_every_listed_architecture_is_tested() -> None:
    assert set(CUTS) == set(ARCHITECTURES)


class OwnHead(transformers.BertForSequenceClassification):  # type: ignore[misc]
    """A subclass from outside transformers: its head may read any token."""


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(
            lambda: build("AlbertConfig", "AlbertForSequenceClassification", BERT_SHAPE),
            id="albert-shares-its-layers",
        ),
        pytest.param(
            lambda: build("BertConfig", "BertForTokenClassification", BERT_SHAPE),
            id="token-classifier-reads-every-token",
        ),
        pytest.param(
            lambda: OwnHead(transformers.BertConfig(**SMALL, **BERT_SHAPE)),
            id="subclass-from-elsewhere",
        ),
        pytest.param(
            lambda: build("GPT2Config", "GPT2ForSequenceClassification", {"n_layer": 1}),
            id="reads-the-last-token",
        ),
        pytest.param(
            lambda: build(
                "BertConfig",
                "BertForSequenceClassification",
                BERT_SHAPE | {"chunk_size_feed_forward": 4},
            ),
            id="feed-forward-in-chunks",
        ),
    ],
)
def test_models_it_does_not_know_are_left_whole(model: Any) -> None:
    built = model()
    assert cut_module(built) is None
    assert first_token_last_layer(built) is None
    assert not any(m._forward_pre_hooks for m in built.modules())


@pytest.fixture(scope="module")
def services(
    trained: dict[Family, tuple[Any, Any]],
) -> dict[Family, tuple[ClassifierService, ClassifierService]]:
    """Per tiny family: a service over the whole model and one over a cut copy."""
    out = {}
    for family, (model, tokenizer) in trained.items():
        whole, cut = copy.deepcopy(model), copy.deepcopy(model)
        assert first_token_last_layer(cut) is not None
        out[family] = tuple(
            ClassifierService.from_model(m, tokenizer, WHOLE, response_timeout_s=3600.0)
            for m in (whole, cut)
        )
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "parameters",
    [{}, {"n_steps": 20}, {"tolerance": 0.01}],
    ids=["default", "explicit-steps", "tolerance-mode"],
)
def test_a_cut_service_predicts_and_explains_as_the_whole_model(
    services: dict[Family, tuple[ClassifierService, ClassifierService]],
    family: Family,
    parameters: dict[str, Any],
) -> None:
    whole, cut = services[family]
    predicted = [answers(s, TEXTS, explain=False) for s in (cut, whole)]
    assert_same_predictions(*predicted, 1e-6)
    explained, reference = (answers(s, TEXTS, explain=True, **parameters) for s in (cut, whole))
    assert_same_explanations(explained, reference, 1e-6)
    assert max(abs(i) for item in explained for i in item["importances"]) > 1e-3


@pytest.mark.parametrize(
    ("handler", "cut"),
    [({}, True), ({"trim_last_layer": False}, False), ({"runtime": "torch-int8"}, True)],
    ids=["default", "turned-off", "int8-predicts"],
)
def test_a_worker_cuts_its_last_layer_unless_told_not_to(
    tiny_models: dict[Family, Path], handler: dict[str, object], cut: bool
) -> None:
    folder = tiny_models["bert"]
    service = ClassifierService.from_context(FakeContext(folder, handler_settings=handler))
    module = cut_module(service.classifier.model)
    assert module is not None
    assert bool(module._forward_pre_hooks) is cut
    batch = [HttpRequest({"texts": TEXTS}), HttpRequest({"texts": TEXTS[:1]}, explain=True)]
    response, explained = run_batch(service.handle, FakeContext(folder), batch)
    assert response.status == explained.status == 200
