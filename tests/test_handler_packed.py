"""Prepacked Linear layers (handlers/packed.py): nn.Linear's answers and gradients, where used.

The tiny families are narrower than the 768 features packing starts at, so these tests pack
every layer of copies (min_features=1) and compare them with the unpacked models.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from support.build_and_serve import serving
from support.fake_context import FakeContext, HttpRequest, run_batch
from support.in_process_service import (
    TEST_SETTINGS,
    assert_same_explanations,
    assert_same_predictions,
)
from support.in_process_service import answers as in_process_answers
from support.tiny_models import LABELS, Family
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.client.inference_client import InferenceClient
from scibert_pack.handlers.model import load_pretrained
from scibert_pack.handlers.packed import (
    MIN_PACKED_FEATURES,
    IdlePacker,
    PackedLinear,
    pack_linear_layers,
    packing_available,
)
from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import HandlerSettings

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch has no oneDNN linear")

FAMILIES: list[Family] = ["bert", "roberta", "distilbert"]
TEXTS = [
    "risk assessment implications of site-specific oral relative bioavailability .",
    "quantum states of the photon decay in the magnetic field .",
    "cells divide",
]
UNPACKED = replace(TEST_SETTINGS, pack_weights=False)


def packed_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, PackedLinear) for m in model.modules())


@pytest.fixture(scope="module")
def pairs(
    trained: dict[Family, tuple[Any, Any]],
) -> dict[Family, tuple[ClassifierService, ClassifierService]]:
    """Per family: a service over the plain model and one over a copy with every Linear packed."""
    out = {}
    for family, (model, tokenizer) in trained.items():
        plain = copy.deepcopy(model)
        packed = copy.deepcopy(model)
        plain.requires_grad_(False)
        packed.requires_grad_(False)
        assert pack_linear_layers(packed, min_features=1) == packed_count(packed) > 0
        out[family] = tuple(
            ClassifierService.from_model(m, tokenizer, UNPACKED, response_timeout_s=3600.0)
            for m in (plain, packed)
        )
    return out  # type: ignore[return-value]


def answers(service: ClassifierService, *, explain: bool) -> list[dict]:
    return in_process_answers(service, TEXTS, explain=explain)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_layers_predict_what_nn_linear_predicts(
    pairs: dict[Family, tuple[ClassifierService, ClassifierService]], family: Family
) -> None:
    plain, packed = (answers(s, explain=False) for s in pairs[family])
    assert_same_predictions(packed, plain, 1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_layers_explain_what_nn_linear_explains(
    pairs: dict[Family, tuple[ClassifierService, ClassifierService]], family: Family
) -> None:
    """Gradients flow back through the packed forward (the backward uses the original weight)."""
    plain, packed = (answers(s, explain=True) for s in pairs[family])
    assert_same_explanations(packed, plain, 1e-6)
    assert max(abs(i) for item in plain for i in item["importances"]) > 1e-3


@pytest.mark.parametrize(
    ("in_features", "out_features", "dtype", "packed"),
    [
        (768, 768, torch.float32, True),
        (768, 3072, torch.float32, True),
        (3072, 768, torch.float32, True),
        (384, 1536, torch.float32, False),
        (768, 5, torch.float32, False),
        (768, 768, torch.bfloat16, False),
        (768, 768, torch.float64, False),
    ],
    ids=["square", "wide", "tall", "narrow", "head", "bfloat16", "float64"],
)
def test_which_layers_are_packed(
    in_features: int, out_features: int, dtype: torch.dtype, packed: bool
) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(in_features, out_features, dtype=dtype))
    keys = set(model.state_dict())
    assert pack_linear_layers(model) == int(packed)
    assert isinstance(model[0], PackedLinear) is packed
    # The weights stay the model's parameters: state_dict and loading are unchanged.
    assert set(model.state_dict()) == keys


def packed_and_plain(in_features: int = 48, out_features: int = 40) -> tuple[Any, Any]:
    torch.manual_seed(0)
    plain = torch.nn.Linear(in_features, out_features)
    return PackedLinear.from_linear(copy.deepcopy(plain)), plain


@pytest.mark.parametrize(
    "shape", [(7, 48), (3, 5, 48), (1, 48)], ids=["rows", "batch-of-sequences", "one-row"]
)
def test_a_packed_layer_gives_nn_linears_outputs_and_input_gradients(
    shape: tuple[int, ...],
) -> None:
    packed, plain = packed_and_plain()
    x = torch.randn(*shape)
    with torch.inference_mode():
        assert torch.allclose(packed(x), plain(x), atol=1e-6)
    # A column slice (strided, as BERT's pooler reads the first token) is read right too.
    wide = torch.randn(4, 3, 48)
    with torch.inference_mode():
        assert torch.allclose(packed(wide[:, 0]), plain(wide[:, 0]), atol=1e-6)
    packed.requires_grad_(False)
    plain.requires_grad_(False)
    grads = []
    for layer in (packed, plain):
        xs = x.clone().requires_grad_(True)
        (layer(xs) ** 2).sum().backward()
        grads.append(xs.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_trainable_weights_and_other_dtypes_take_nn_linears_path() -> None:
    packed, plain = packed_and_plain()
    x = torch.randn(6, 48)
    # Trainable: the parameters get nn.Linear's gradients.
    (packed(x) ** 2).sum().backward()
    (plain(x) ** 2).sum().backward()
    assert packed.weight.grad is not None
    assert torch.allclose(packed.weight.grad, plain.weight.grad, atol=1e-5)
    # Cast after packing: the packed copy (fp32) is not used for a bfloat16 input.
    packed.to(torch.bfloat16)
    plain.to(torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(packed(x.bfloat16()), plain(x.bfloat16()))


@pytest.mark.parametrize(
    "change",
    [
        lambda layer, new: layer.weight.copy_(new),
        lambda layer, new: layer.load_state_dict({"weight": new, "bias": layer.bias}),
    ],
    ids=["in-place", "load_state_dict"],
)
def test_a_weight_changed_after_packing_is_the_one_used(change: Any) -> None:
    packed, plain = packed_and_plain()
    packed.requires_grad_(False)
    new = torch.randn_like(plain.weight)
    with torch.no_grad():
        change(packed, new)
        plain.weight.copy_(new)
    x = torch.randn(5, 48)
    with torch.inference_mode():
        assert torch.allclose(packed(x), plain(x), atol=1e-6)


def wide_bert(vocab_size: int = 200) -> BertForSequenceClassification:
    """One BERT layer as wide as bert-base, with a small vocabulary: cheap to build."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=MIN_PACKED_FEATURES,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=MIN_PACKED_FEATURES,
        num_labels=3,
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def test_the_idle_packer_packs_only_while_the_worker_is_idle() -> None:
    model = wide_bert()
    idle = threading.Event()  # cleared: a batch is being answered
    packer = IdlePacker(model, idle)
    packer.start()
    packer.join(timeout=0.3)
    assert packer.is_alive() and packer.packed == 0 and packed_count(model) == 0
    idle.set()
    packer.join(timeout=120)
    assert not packer.is_alive()
    # query, key, value, attention output, intermediate, output, pooler; not the 3-label head
    assert packer.packed == packed_count(model) == 7


def test_a_stopped_packer_ends_without_waiting_for_the_worker_to_be_idle() -> None:
    model = wide_bert()
    idle = threading.Event()  # a batch that never ends
    packer = IdlePacker(model, idle)
    packer.start()
    packer.stop(timeout=10)
    assert not packer.is_alive()
    assert packer.packed == packed_count(model) == 0


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """A saved one-layer classifier as wide as bert-base, with the tiny BERT's tokenizer."""
    folder = tmp_path_factory.mktemp("wide-bert")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = wide_bert(vocab_size=len(tokenizer))
    model.config.id2label = dict(LABELS)
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("handler", "packs"),
    [({}, True), ({"pack_weights": False}, False), ({"runtime": "torch-int8"}, False)],
    ids=["default", "turned-off", "int8-predicts"],  # int8 quantizes the nn.Linear layers
)
def test_a_worker_packs_after_loading_and_never_during_a_batch(
    wide_model_dir: Path, handler: dict[str, object], packs: bool
) -> None:
    service = ClassifierService.from_context(FakeContext(wide_model_dir, handler_settings=handler))
    model = service.classifier.model
    seen_idle: list[bool] = []
    model.register_forward_pre_hook(lambda *_: seen_idle.append(service.idle.is_set()))
    context = FakeContext(wide_model_dir)
    # The explanation runs the fp32 model whatever predicts (int8 predicts from its own copy).
    batch = [HttpRequest({"texts": TEXTS}), HttpRequest({"texts": TEXTS[:1]}, explain=True)]
    response, explained = run_batch(service.handle, context, batch)
    assert response.status == explained.status == 200
    assert seen_idle and not any(seen_idle)
    assert service.idle.is_set()
    if not packs:
        assert service.packer is None and packed_count(model) == 0
        return
    assert service.packer is not None
    service.packer.join(timeout=120)
    assert service.packer.packed == packed_count(model) == 7
    (again,) = run_batch(service.handle, context, [HttpRequest({"texts": TEXTS})])
    for before, after in zip(response.body, again.body, strict=True):
        assert after["label"] == before["label"]
        for label, p in before["probabilities"].items():
            assert after["probabilities"][label] == pytest.approx(p, abs=1e-6)


def test_a_served_worker_packs_and_answers_as_nn_linear(
    wide_model_dir: Path, tmp_path: Path
) -> None:
    """In a real TorchServe worker (the default archive): the layers are packed and the last
    layer finishes for the first token only (its log says both), and predictions and
    explanations are the plain model's."""
    model, tokenizer = load_pretrained(wide_model_dir)
    reference = ClassifierService.from_model(
        model,
        tokenizer,
        HandlerSettings(pack_weights=False, trim_last_layer=False),
        response_timeout_s=3600.0,
    )
    settings = BuildSettings(name="wide", profile="local")
    with serving(wide_model_dir, tmp_path, settings) as server:
        client = InferenceClient(server.inference_url, "wide", timeout_s=120)
        predicted, _ = client.infer(TEXTS)
        explained, _ = client.explain(TEXTS, merge_subwords=False)
        log = tmp_path / "run" / "logs" / "model_log.log"
        for _ in range(600):  # the worker packs in the background, after loading
            if "7 Linear layers compute with prepacked weights" in log.read_text(errors="replace"):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no worker logged its packed layers:\n{log.read_text(errors='replace')}")
        assert "finishes for the first token only" in log.read_text(errors="replace")
        # Answers once packed: the same as before and as the unpacked model's.
        predicted_packed, _ = client.infer(TEXTS)
        explained_packed, _ = client.explain(TEXTS, merge_subwords=False)
    expected = answers(reference, explain=False)
    for got, want in zip([*predicted, *predicted_packed], expected * 2, strict=True):
        assert got.label == want["label"]
        assert got.probabilities == pytest.approx(want["probabilities"], abs=1e-5)
    reasons = answers(reference, explain=True)
    for got, want in zip([*explained, *explained_packed], reasons * 2, strict=True):
        assert got.words == want["words"]
        assert got.importances == pytest.approx(want["importances"], abs=1e-5)
        assert got.delta == pytest.approx(want["delta"], abs=1e-5)


# A process that ends right after loading: the packer is still reordering weights.
EXIT_RIGHT_AFTER_LOADING = """
import sys
from support.fake_context import FakeContext
from scibert_pack.handlers.service import ClassifierService
service = ClassifierService.from_context(FakeContext(sys.argv[1]))
print("packer started:", service.packer is not None)
"""


def test_a_process_that_exits_while_the_packer_works_exits_cleanly(wide_model_dir: Path) -> None:
    """A bare script (a benchmark, a notebook kernel's shutdown) that loads the handler and ends
    at once: the packer's oneDNN call in flight at exit used to abort the process (status 134,
    "terminate called without an active exception")."""
    tests = Path(__file__).parent
    for _ in range(3):  # the race is lost most times without the exit hook; bounded
        done = subprocess.run(
            [sys.executable, "-c", EXIT_RIGHT_AFTER_LOADING, str(wide_model_dir)],
            cwd=tests,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tests)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode, "terminate called" in done.stderr) == (0, False), done.stderr
        assert done.stdout == "packer started: True\n"
