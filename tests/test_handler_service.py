"""The handler pipeline end to end on tiny classifiers, through a fake TorchServe context."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support.fake_context import FakeContext, FakeMetrics, HttpRequest, MetricTypes, Response
from support.in_process_service import (
    TEST_SETTINGS,
    call,
    make_service,
    recorded_passes,
    reference_probabilities,
)
from support.tiny_models import Family

from scibert_pack.handlers.model import (
    CHARS_PER_TOKEN_BOUND,
    ModelLoadError,
    choose_device,
    token_chunks,
)
from scibert_pack.handlers.protocol import JSON_HINT, KSERVE_SHAPE
from scibert_pack.handlers.render import reason_phrase
from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import HandlerSettings, SettingsError

LABELS = ["biology", "chemistry", "physics"]
TEXTS = [
    "risk assessment implications of site-specific oral relative bioavailability .",
    "quantum states of the photon decay",
    "the catalyst speeds up the reaction between the acid and the base",
]
BLOG = {
    "id": "42",
    "inputs": [
        {
            "name": "input-0",
            "shape": -1,
            "datatype": "BYTES",
            "data": '{"text": "Risk assessment implications."}',
        }
    ],
}


@pytest.fixture(scope="module")
def services(trained: dict[Family, tuple[Any, Any]]) -> dict[Family, ClassifierService]:
    return {family: make_service(*pair) for family, pair in trained.items()}


@pytest.fixture(scope="module")
def bert(services: dict[Family, ClassifierService]) -> ClassifierService:
    return services["bert"]


# -- response formats ------------------------------------------------------------------------


def v2_infer(body: dict) -> list[tuple[str, list[float]]]:
    assert set(body) == {"id", "model_name", "model_version", "outputs", "parameters"}
    assert (body["model_name"], body["model_version"]) == ("scibert", "2.1")
    label, probs = body["outputs"]
    n = len(label["data"])
    assert {k: label[k] for k in ("name", "datatype", "shape")} == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [n],
    }
    assert {k: probs[k] for k in ("name", "datatype", "shape")} == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [n, 3],
    }
    assert body["parameters"] == {"labels": LABELS, "truncated": [False] * n}
    flat = probs["data"]
    return [(label["data"][i], flat[3 * i : 3 * i + 3]) for i in range(n)]


def v1_items(body: dict) -> list[tuple[str, list[float]]]:
    assert set(body) == {"predictions"}
    return native_items(body["predictions"])


def native_items(body: Any) -> list[tuple[str, list[float]]]:
    items = body if isinstance(body, list) else [body]
    for item in items:
        assert set(item) == {"label", "probabilities", "truncated"}
        assert list(item["probabilities"]) == LABELS and item["truncated"] is False
    return [(i["label"], list(i["probabilities"].values())) for i in items]


def v2_explanations(body: dict) -> list[dict]:
    assert set(body) == {"id", "model_name", "model_version", "outputs"}
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "explain",
        "BYTES",
        [len(output["data"])],
    )
    return list(output["data"])


def v1_explanations(body: dict) -> list[dict]:
    assert set(body) == {"explanations"}
    return list(body["explanations"])


def native_explanations(body: Any) -> list[dict]:
    return list(body) if isinstance(body, list) else [body]


V2_THREE = {"id": "7", "inputs": [{"name": "t", "shape": [3], "datatype": "BYTES", "data": TEXTS}]}

PREDICT_CASES = [
    pytest.param(
        HttpRequest(BLOG, route="v2"), v2_infer, ["Risk assessment implications."], id="v2-blog"
    ),
    pytest.param(HttpRequest(V2_THREE, route="v2"), v2_infer, TEXTS, id="v2-three-texts"),
    pytest.param(
        HttpRequest(json.dumps(V2_THREE), content_type="text/plain", route="v2"),
        v2_infer,
        TEXTS,
        id="v2-sent-as-text-plain",
    ),
    pytest.param(
        HttpRequest(json.dumps(BLOG).encode(), content_type=None, route="v2"),
        v2_infer,
        ["Risk assessment implications."],
        id="v2-without-content-type",
    ),
    pytest.param(HttpRequest({"instances": TEXTS[:2]}, route="v1"), v1_items, TEXTS[:2], id="v1"),
    pytest.param(
        HttpRequest(BLOG, route=None), v2_infer, ["Risk assessment implications."], id="v2-guessed"
    ),
    pytest.param(
        HttpRequest(TEXTS[1], content_type="text/plain", route=None),
        native_items,
        TEXTS[1:2],
        id="text-guessed",
    ),
    pytest.param(
        HttpRequest(TEXTS[1], content_type="text/plain"),
        native_items,
        TEXTS[1:2],
        id="native-text-plain",
    ),
    pytest.param(
        HttpRequest(TEXTS[0].encode(), content_type="application/octet-stream"),
        native_items,
        TEXTS[:1],
        id="native-bytes",
    ),
    pytest.param(HttpRequest({"texts": TEXTS}), native_items, TEXTS, id="native-texts"),
    pytest.param(HttpRequest(TEXTS[1:]), native_items, TEXTS[1:], id="native-list"),
]


@pytest.mark.parametrize(("request_", "extract", "texts"), PREDICT_CASES)
def test_predictions_match_the_model(
    bert: ClassifierService,
    trained: dict[Family, tuple[Any, Any]],
    request_: HttpRequest,
    extract: Any,
    texts: list[str],
) -> None:
    (response,) = call(bert, [request_])
    assert (response.status, response.content_type) == (200, "application/json")
    got = extract(response.body)
    model, tokenizer = trained["bert"]
    assert len(got) == len(texts)
    for (label, probs), text in zip(got, texts, strict=True):
        expected = reference_probabilities(model, tokenizer, text)
        assert probs == pytest.approx(expected, abs=1e-5)
        assert label == LABELS[max(range(3), key=expected.__getitem__)]


def test_native_single_text_is_one_object_and_list_is_a_list(bert: ClassifierService) -> None:
    single, listed = call(bert, [HttpRequest({"text": TEXTS[0]}), HttpRequest([TEXTS[0]])])
    assert isinstance(single.body, dict) and listed.body == [single.body]


def test_v2_echoes_ids_per_request(bert: ClassifierService) -> None:
    requests = [HttpRequest({**BLOG, "id": f"req-{i}"}) for i in range(4)]
    assert [r.body["id"] for r in call(bert, requests)] == ["req-0", "req-1", "req-2", "req-3"]


EXPLAIN_CASES = [
    pytest.param(HttpRequest(BLOG, explain=True, route="v2"), v2_explanations, 1, id="v2-blog"),
    pytest.param(
        HttpRequest({"instances": TEXTS}, explain=True, route="v1"), v1_explanations, 3, id="v1"
    ),
    pytest.param(
        HttpRequest(TEXTS[0], content_type="text/plain", explain=True),
        native_explanations,
        1,
        id="native-text",
    ),
    pytest.param(
        HttpRequest({"texts": TEXTS[:2]}, explain=True), native_explanations, 2, id="native-texts"
    ),
]


@pytest.mark.parametrize(("request_", "extract", "count"), EXPLAIN_CASES)
def test_explanation_formats(
    bert: ClassifierService, request_: HttpRequest, extract: Any, count: int
) -> None:
    (response,) = call(bert, [request_])
    assert response.status == 200
    items = extract(response.body)
    assert len(items) == count
    for item in items:
        # No n_steps in the request: the tolerance mode, which says what it used and reached.
        assert set(item) == {
            "words", "importances", "delta", "label", "target", "truncated", "granularity",
            "n_steps", "tolerance", "converged",
        }  # fmt: skip
        assert len(item["words"]) == len(item["importances"]) > 2
        assert item["target"] == item["label"] and item["truncated"] is False


# -- batching --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_batch_answers_equal_single_answers(
    services: dict[Family, ClassifierService], family: Family
) -> None:
    """Dynamic padding to the batch's longest text must not change any answer."""
    service = services[family]
    requests = [
        HttpRequest({"texts": [TEXTS[0], "photon"]}),
        HttpRequest({"instances": [TEXTS[1]]}, explain=True),
        HttpRequest(TEXTS[2], content_type="text/plain"),
        HttpRequest({"texts": ["cells divide"]}, explain=True),
    ]
    together = call(service, requests)
    for request, batched in zip(requests, together, strict=True):
        (alone,) = call(service, [request])
        assert batched.status == alone.status == 200
        assert_same_body(batched.body, alone.body)


def assert_same_body(got: Any, expected: Any) -> None:
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-5)
    elif isinstance(expected, dict):
        assert set(got) == set(expected)
        for key in expected:
            assert_same_body(got[key], expected[key])
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_same_body(g, e)
    else:
        assert got == expected


def test_one_forward_pass_per_batch(bert: ClassifierService) -> None:
    metrics = FakeMetrics()
    call(bert, [HttpRequest({"texts": TEXTS}), HttpRequest(BLOG, explain=True)], metrics)
    assert [m.value for m in metrics.named("scibert_texts_per_batch")] == [4.0]
    assert len(metrics.named("scibert_inference_ms")) == 1
    assert [m.value for m in metrics.named("scibert_forward_passes_total")] == [1.0]


# -- bounded passes --------------------------------------------------------------------------

CHUNKS = [
    pytest.param([5, 5, 5], 100, None, [(0, 1, 2)], id="all-fit-one-pass-in-order"),
    pytest.param([10, 3, 7, 2], 40, None, [(0, 1, 2, 3)], id="exactly-at-the-budget"),
    pytest.param([10, 3, 7, 2], 20, None, [(3, 1), (2, 0)], id="split-shortest-first"),
    pytest.param([50, 4], 32, None, [(1,), (0,)], id="over-long-text-alone"),
    pytest.param([4, 4, 4, 4, 4], 1000, 2, [(0, 1), (2, 3), (4,)], id="row-cap"),
    pytest.param([], 64, None, [], id="no-texts"),
]


@pytest.mark.parametrize(("lengths", "budget", "rows", "expected"), CHUNKS)
def test_token_chunks(
    lengths: list[int], budget: int, rows: int | None, expected: list[tuple[int, ...]]
) -> None:
    assert token_chunks(lengths, budget, rows) == expected


def test_a_batch_over_max_batch_tokens_is_split_and_answers_stay_the_same(
    trained: dict[Family, tuple[Any, Any]], bert: ClassifierService
) -> None:
    model, tokenizer = trained["bert"]
    service = make_service(
        model, tokenizer, dataclasses.replace(TEST_SETTINGS, max_batch_tokens=64)
    )
    requests = [
        HttpRequest({"texts": [TEXTS[0], "photon"]}),
        HttpRequest(V2_THREE, route="v2"),
        HttpRequest({"instances": [TEXTS[1], "cells divide", TEXTS[2]]}, route="v1"),
    ]
    metrics = FakeMetrics()
    with recorded_passes(model) as shapes:
        responses = call(service, requests, metrics)
    passes = [m.value for m in metrics.named("scibert_forward_passes_total")]
    # 8 texts of up to 22 tokens: 176 padded tokens in one pass, so at least 3 passes of <= 64.
    assert passes == [float(len(shapes))] and passes[0] >= 3
    assert all(rows * width <= 64 for rows, width in shapes), shapes
    for request, response in zip(requests, responses, strict=True):
        (alone,) = call(bert, [request])
        assert response.status == alone.status == 200
        assert_same_body(response.body, alone.body)


def test_requests_with_different_n_steps_are_explained_in_groups(bert: ClassifierService) -> None:
    metrics = FakeMetrics()
    requests = [
        HttpRequest({"texts": [TEXTS[0]], "parameters": {"n_steps": 20}}, explain=True),
        HttpRequest({"texts": [TEXTS[1]], "parameters": {"n_steps": 30}}, explain=True),
        HttpRequest({"texts": [TEXTS[2]], "parameters": {"n_steps": 20}}, explain=True),
    ]
    assert [r.status for r in call(bert, requests, metrics)] == [200, 200, 200]
    assert sorted(m.value for m in metrics.named("scibert_explain_steps")) == [20.0, 30.0]


def test_metrics_have_their_types_and_units(bert: ClassifierService) -> None:
    metrics = FakeMetrics()
    call(bert, [HttpRequest(BLOG, explain=True), HttpRequest(BLOG)], metrics)
    units = {m.name: (m.unit, m.metric_type) for m in metrics.recorded}
    assert [m.value for m in metrics.named("scibert_requests_total")] == [2.0]
    assert [m.value for m in metrics.named("scibert_batches_total")] == [1.0]
    assert units == {
        "scibert_requests_total": ("count", MetricTypes.COUNTER),
        "scibert_batches_total": ("count", MetricTypes.COUNTER),
        "scibert_texts_per_batch": ("count", MetricTypes.GAUGE),
        "scibert_forward_passes_total": ("count", MetricTypes.COUNTER),
        "scibert_inference_ms": ("ms", MetricTypes.GAUGE),
        "scibert_explain_ms": ("ms", MetricTypes.GAUGE),
        "scibert_explain_steps": ("count", MetricTypes.GAUGE),
    }


# -- bad requests ----------------------------------------------------------------------------

BAD = [
    pytest.param(
        HttpRequest(b'{"x":'),
        400,
        "request body is not valid JSON (Expecting value at line 1 column 6); "
        "fix the JSON or send text/plain",
        None,
        id="bad-json",
    ),
    pytest.param(
        HttpRequest(b"\xff abc", content_type="text/plain"),
        400,
        "request body is not valid UTF-8 (invalid start byte at byte 0); send UTF-8 encoded text",
        None,
        id="bad-utf8",
    ),
    pytest.param(
        HttpRequest(
            {"id": "9", "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        ),
        400,
        "input 'x' has datatype 'FP32'; this model takes text: send datatype 'BYTES'",
        None,
        id="v2-fp32",
    ),
    pytest.param(
        HttpRequest({"texts": ["a"] * 9}),
        413,
        "request holds 9 texts, more than the limit of 8 (max_texts_per_request); split it",
        {"limit_name": "max_texts_per_request", "limit": 8, "value": 9},
        id="too-many-texts",
    ),
    pytest.param(
        HttpRequest({"text": "word " * 101}),
        413,
        "text 0 has 505 characters, more than the limit of 500 (max_text_chars); shorten it",
        {"limit_name": "max_text_chars", "limit": 500, "value": 505},
        id="text-too-long",
    ),
    pytest.param(
        HttpRequest({"texts": ["a"], "parameters": {"target": "maths"}}, explain=True),
        400,
        "unknown target label 'maths'; labels: biology, chemistry, physics",
        None,
        id="unknown-target",
    ),
    pytest.param(
        HttpRequest({"instances": ["a"], "parameters": {"n_steps": 0}}, explain=True),
        400,
        "n_steps must be between 1 and 100, got 0",
        None,
        id="n-steps-zero",
    ),
    pytest.param(
        HttpRequest("   ", content_type="text/plain"),
        400,
        "text 0 is empty or whitespace; send some words",
        None,
        id="whitespace",
    ),
    pytest.param(
        HttpRequest('{"inputs": [1,', content_type="text/plain", route="v2"),
        400,
        "request body is not valid JSON (Expecting value at line 1 column 15); send a JSON "
        f"object, {KSERVE_SHAPE}",
        None,
        id="v2-invalid-json-text-plain",
    ),
    pytest.param(
        HttpRequest(b'{"instances": [1,', content_type=None, route="v1", explain=True),
        400,
        "request body is not valid JSON (Expecting value at line 1 column 18); send a JSON "
        f"object, {KSERVE_SHAPE}",
        None,
        id="v1-invalid-json-no-content-type",
    ),
    pytest.param(
        HttpRequest(["a", "b"], route="v2"),
        400,
        f"request body is a JSON array, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        None,
        id="v2-json-list",
    ),
    pytest.param(
        HttpRequest("a b", route="v1"),
        400,
        f"request body is a JSON string, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        None,
        id="v1-json-string",
    ),
    pytest.param(
        HttpRequest(None, route="v2", explain=True),
        400,
        f"request body is JSON null, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        None,
        id="v2-json-null",
    ),
    pytest.param(
        HttpRequest({"text": "a"}, route="v2"),
        400,
        "JSON object has neither inputs (KServe v2) nor instances (KServe v1) (got keys: text); "
        f'send {KSERVE_SHAPE}, or send {{"text": "..."}} to /predictions/NAME',
        None,
        id="v2-native-object",
    ),
    pytest.param(
        HttpRequest(None, content_type=None, form={"text": b"hello"}, route="v2"),
        400,
        "request has no body (TorchServe read it as form fields: text); send a JSON object, "
        f"{KSERVE_SHAPE}, {JSON_HINT}",
        None,
        id="v2-form",
    ),
    pytest.param(
        HttpRequest(None),
        400,
        'JSON body must be an object or a list, got JSON null; send {"text": "..."} or a '
        "KServe v1/v2 request",
        None,
        id="native-json-null",
    ),
    pytest.param(
        HttpRequest(
            {"instances": ["a"] * 3, "parameters": {"n_steps": 100}}, route="v1", explain=True
        ),
        413,
        "explain request asks for 3 text(s) x 100 steps = 300 text-steps, more than the limit of "
        "200 (max_explain_work); send fewer texts per request or fewer steps (parameters.n_steps)",
        {"limit_name": "max_explain_work", "limit": 200, "value": 300},
        id="explain-work-over-cap",
    ),
]


# limit_name, limit and value of an error body, for a request over a handler setting.
Fields = dict[str, object] | None


@pytest.mark.parametrize(("request_", "code", "message", "limit"), BAD)
def test_bad_request_alone(
    bert: ClassifierService, request_: HttpRequest, code: int, message: str, limit: Fields
) -> None:
    """The error body: KServe's "error", the code, and the limit a request went over, if any."""
    (response,) = call(bert, [request_])
    body = {"error": message, "code": code, **(limit or {})}
    assert response == Response(code, reason_phrase(code), body, "application/json")


@pytest.mark.parametrize(("request_", "code", "message", "limit"), BAD)
def test_bad_request_in_a_batch_fails_alone(
    bert: ClassifierService, request_: HttpRequest, code: int, message: str, limit: Fields
) -> None:
    good = [HttpRequest(BLOG, route="v2"), HttpRequest({"texts": TEXTS[:2]}, explain=True)]
    first, bad, second = call(bert, [good[0], request_, good[1]])
    assert (bad.status, bad.body) == (code, {"error": message, "code": code, **(limit or {})})
    for response, request in ((first, good[0]), (second, good[1])):
        (alone,) = call(bert, [request])
        assert response.status == 200
        assert_same_body(response.body, alone.body)


# -- truncation ------------------------------------------------------------------------------


def test_truncated_texts_are_reported(bert: ClassifierService) -> None:
    long_text = " ".join(["energy"] * 60)  # 60 tokens > max_length 32
    v2, v1, explained = call(
        bert,
        [
            HttpRequest(
                {
                    "inputs": [
                        {
                            "name": "t",
                            "shape": [2],
                            "datatype": "BYTES",
                            "data": [long_text, "photon"],
                        }
                    ]
                }
            ),
            HttpRequest({"instances": [long_text]}),
            HttpRequest({"text": long_text}, explain=True),
        ],
    )
    assert v2.body["parameters"]["truncated"] == [True, False]
    assert v1.body["predictions"][0]["truncated"] is True
    assert explained.body["truncated"] is True
    # The words the model read: max_length tokens less [CLS] and [SEP].
    assert explained.body["words"] == ["energy"] * (TEST_SETTINGS.max_length - 2)


# -- failures inside the model ---------------------------------------------------------------


class PoisonedModel(torch.nn.Module):
    """Wraps a classifier; fails on batches holding `poison_id` (when `in_gradients`: only
    while gradients are on, i.e. during explanations, not predictions)."""

    def __init__(self, inner: Any, poison_id: int, *, in_gradients: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.poison_id = poison_id
        self.in_gradients = in_gradients

    def get_input_embeddings(self) -> Any:
        return self.inner.get_input_embeddings()

    def forward(
        self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None
    ) -> Any:
        poisoned = bool((input_ids == self.poison_id).any())
        if poisoned and (torch.is_grad_enabled() or not self.in_gradients):
            raise RuntimeError("poisoned batch")
        return self.inner(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )


@pytest.mark.parametrize(
    ("in_gradients", "poisoned_explains", "stage"),
    [(False, False, "prediction"), (False, True, "explanation"), (True, True, "explanation")],
    # An explained text is predicted by its explanation's first pass: no prediction stage.
    ids=["forward-pass-predict", "forward-pass-explain", "gradients"],
)
def test_a_failing_request_gets_500_and_its_neighbours_succeed(
    trained: dict[Family, tuple[Any, Any]],
    bert: ClassifierService,
    in_gradients: bool,
    poisoned_explains: bool,
    stage: str,
) -> None:
    model, tokenizer = trained["bert"]
    poison_id = tokenizer.convert_tokens_to_ids("magnetic")
    service = make_service(PoisonedModel(model, poison_id, in_gradients=in_gradients), tokenizer)
    requests = [
        HttpRequest({"texts": TEXTS[:2]}, explain=True),
        HttpRequest({"text": "the magnetic field"}, explain=poisoned_explains),
        HttpRequest(BLOG),
    ]
    first, poisoned, third = call(service, requests)
    message = f"{stage} failed inside the model server for request 1; see the worker log"
    assert (poisoned.status, poisoned.body) == (500, {"error": message, "code": 500})
    for response, request in ((first, requests[0]), (third, requests[2])):
        (reference,) = call(bert, [request])
        assert response.status == 200
        assert_same_body(response.body, reference.body)


# -- loading ---------------------------------------------------------------------------------


def test_loads_from_the_context(tiny_models: dict[Family, Path]) -> None:
    metrics = FakeMetrics()
    context = FakeContext(
        tiny_models["roberta"],
        handler_settings={"max_length": 16},
        model_name="sci",
        model_version="3",
        metrics=metrics,
    )
    service = ClassifierService.from_context(context)
    assert (service.info.name, service.info.version, service.classifier.max_length) == (
        "sci",
        "3",
        16,
    )
    assert service.classifier.device == torch.device("cpu")
    assert not service.classifier.model.training


def test_unknown_handler_setting_fails_loading(tiny_models: dict[Family, Path]) -> None:
    context = FakeContext(tiny_models["bert"], handler_settings={"max_lenght": 16})
    with pytest.raises(SettingsError, match="unknown handler setting"):
        ClassifierService.from_context(context)


def test_model_folder_without_weights_fails_loading(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as caught:
        ClassifierService.from_context(FakeContext(tmp_path))
    assert str(caught.value) == (
        f"model folder {tmp_path} has no weights (looked for *.safetensors, *.bin); "
        "save the model with model.save_pretrained(folder)"
    )


@pytest.mark.parametrize(
    ("device", "gpu_id"),
    [("auto", None), ("cpu", 0), ("auto", 0), ("cuda", 0)],
    ids=["no-gpu-id", "cpu-setting", "auto-without-cuda", "cuda-without-cuda"],
)
def test_device_falls_back_to_cpu(device: Any, gpu_id: int | None) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert choose_device(HandlerSettings(device=device), gpu_id) == torch.device("cpu")


# -- per-text targets, unreadable requests, bounded tokenization ------------------------------


def test_each_text_is_explained_for_its_own_target(bert: ClassifierService) -> None:
    texts = [
        json.dumps({"text": TEXTS[0], "target": 2}),
        json.dumps({"text": TEXTS[1], "target": "biology"}),
        TEXTS[2],
    ]
    blog = {**BLOG, "inputs": [{**BLOG["inputs"][0], "data": texts}]}
    together, with_parameters = call(
        bert,
        [
            HttpRequest(blog, explain=True, route="v2"),
            HttpRequest({"instances": [TEXTS[2]], "parameters": {"target": 1}}, explain=True),
        ],
    )
    items = together.body["outputs"][0]["data"]
    (predicted,) = call(bert, [HttpRequest({"texts": [TEXTS[2]]})])
    assert [i["target"] for i in items] == ["physics", "biology", predicted.body[0]["label"]]
    assert with_parameters.body["explanations"][0]["target"] == "chemistry"
    # The same text alone, for the same target, gets the same explanation.
    (alone,) = call(bert, [HttpRequest({"text": TEXTS[0], "parameters": {"target": 2}}, True)])
    assert_same_body(items[0], alone.body)


def test_an_exception_while_reading_one_request_fails_only_that_request(
    bert: ClassifierService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scibert_pack.handlers.service as service_module

    real = service_module.parse_request

    def parse(raw: Any, *args: Any) -> Any:
        if raw.body == {"text": "boom"}:
            raise MemoryError("simulated")
        return real(raw, *args)

    monkeypatch.setattr(service_module, "parse_request", parse)
    good = HttpRequest({"text": TEXTS[0]})
    first, bad, second = call(bert, [good, HttpRequest({"text": "boom"}), good])
    message = (
        "the request could not be read (MemoryError); send well-formed JSON or UTF-8 text of "
        "ordinary size and nesting"
    )
    assert (bad.status, bad.phrase, bad.body) == (
        400,
        "Bad Request",
        {"error": message, "code": 400},
    )
    assert first.status == second.status == 200 and first.body == second.body


def test_content_encoding_reaches_the_parser(bert: ClassifierService) -> None:
    gzipped = HttpRequest(BLOG, route="v2", extra_headers={"Content-Encoding": "gzip"})
    bad, good = call(bert, [gzipped, HttpRequest(BLOG, route="v2")])
    assert (bad.status, good.status) == (400, 200)
    assert "Content-Encoding is not supported" in bad.body["error"]


LONG = [
    pytest.param(" ".join(["energy"] * 4000), True, id="many-words"),
    pytest.param("energy " + " " * 20_000 + "photon", False, id="whitespace-run-fits"),
    pytest.param("photon " * 3 + "x" * 5000 + " energy" * 40, True, id="one-giant-word"),
    pytest.param("the photon " + "\u00e9 " * 3000, True, id="accents"),
    pytest.param("the photon" + "\u00e9" * 3000, False, id="one-unknown-word"),
    pytest.param("energy " * 25, False, id="just-fits"),
]


@pytest.mark.parametrize(("text", "truncated"), LONG)
def test_long_texts_are_cut_before_tokenizing_without_changing_their_tokens(
    bert: ClassifierService, text: str, truncated: bool
) -> None:
    classifier = bert.classifier
    cut = classifier.tokenize([text])
    whole = classifier.tokenizer(
        [text], truncation=True, max_length=classifier.max_length, return_tensors="pt"
    )
    assert cut.inputs["input_ids"].tolist() == whole["input_ids"].tolist()
    assert cut.truncated == (truncated,)


def test_a_long_text_is_tokenized_from_a_bounded_prefix(
    bert: ClassifierService, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = bert.classifier
    seen: list[int] = []
    tokenizer = classifier.tokenizer
    real = type(tokenizer).__call__

    def spy(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(len(t) for t in ([text] if isinstance(text, str) else text))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    classifier.tokenize(["energy " * 14_000])  # 98,000 characters
    assert max(seen) <= classifier.max_length * CHARS_PER_TOKEN_BOUND


def test_free_memory_is_trimmed_after_a_large_batch_and_after_the_next(
    bert: ClassifierService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TorchServe frees a batch only when the next arrives, so both batches schedule a trim."""
    import scibert_pack.handlers.service as service_module

    trims: list[int] = []
    monkeypatch.setattr(service_module, "release_free_memory_soon", lambda: trims.append(1))
    monkeypatch.setattr(service_module, "TRIM_AFTER_BYTES", 1000)
    large = HttpRequest({"texts": ["cells divide " * 30] * 3})  # 1,170 characters
    small = HttpRequest({"text": "cells divide"})
    counts = []
    for batch in ([small], [large, small], [small], [small], [small, large]):
        call(bert, batch)
        counts.append(len(trims))
    assert counts == [0, 1, 2, 2, 3]
    service_module.release_free_memory()  # and the real trim runs (a no-op off glibc)
