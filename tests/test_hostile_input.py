"""Hostile input against a real TorchServe serving a built archive, on every route.

Each case sends one bad request together with a good one (released at the same moment, so they
share a dynamic batch) and checks: the bad one gets its 4xx with a JSON error naming the problem,
the good one gets exactly the answer it gets alone, and the Python worker did not restart.
Refusals by TorchServe's Java front end (unknown model, oversized body) are checked the same way.
The archive is built with limits other than the defaults, and the messages name their values: the
archive's settings are what the worker enforces.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import requests
from support.build_and_serve import serving
from support.shared_servers import worker_states
from support.tiny_models import CORPUS, LABELS

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.handlers.render import reason_phrase
from scibert_pack.handlers.settings import HandlerSettings
from scibert_pack.serving.server import TorchServeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

Protocol = Literal["v2", "v1", "native"]
MODEL = "tiny"
GOOD_TEXT = "the catalyst speeds up the reaction between the acid and the base ."
# The archive's limits, all different from the defaults, and a small front-end body cap so that an
# oversized body is cheap to send. max_batch_tokens 128 is two full-length texts of the tiny
# model (64 tokens): a request of a dozen sentences needs several forward passes.
LIMITS = HandlerSettings(
    explain_steps=8,
    max_explain_steps=400,
    max_texts_per_request=200,
    max_text_chars=95_000,
    max_explain_texts=12,
    max_explain_work=600,
    max_batch_tokens=128,
)
MAX_REQUEST_BYTES = 2 * 1024 * 1024
KSERVE: tuple[Protocol, ...] = ("v2", "v1")
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Route:
    path: str
    protocol: Protocol
    explain: bool


ROUTES = {
    "v2-infer": Route("/v2/models/{m}/infer", "v2", False),
    "v2-explain": Route("/v2/models/{m}/explain", "v2", True),
    "v1-predict": Route("/v1/models/{m}:predict", "v1", False),
    "v1-explain": Route("/v1/models/{m}:explain", "v1", True),
    "native-predict": Route("/predictions/{m}", "native", False),
    "native-explain": Route("/explanations/{m}", "native", True),
}


def wrap(protocol: Protocol, texts: object, parameters: object = None) -> dict[str, Any]:
    """`texts` in the request shape of `protocol`; `parameters` left out when None."""
    if protocol == "v2":
        count = len(texts) if isinstance(texts, list) else 1
        body: dict[str, Any] = {
            "id": "hostile",
            "inputs": [{"name": "text", "shape": [count], "datatype": "BYTES", "data": texts}],
        }
    elif protocol == "v1":
        body = {"instances": texts}
    else:
        body = {"texts": texts}
    if parameters is not None:
        body["parameters"] = parameters
    return body


Body = tuple[bytes, str | None]


def as_json(obj: object) -> Body:
    # ensure_ascii: a lone surrogate travels as the escape "\udc80", as a client would send it.
    return json.dumps(obj).encode(), JSON_TYPE


def texts(*items: object, **parameters: object) -> Callable[[Protocol], Body]:
    return lambda p: as_json(wrap(p, list(items), parameters or None))


def raw(data: bytes, content_type: str | None = JSON_TYPE) -> Callable[[Protocol], Body]:
    return lambda p: (data, content_type)


def bad_bytes_in_text(protocol: Protocol) -> Body:
    data, content_type = as_json(wrap(protocol, ["@@BAD@@ cells divide"]))
    return data.replace(b"@@BAD@@", b"\xff\xfe\xfd"), content_type


def native_texts(value: object) -> Callable[[Protocol], Body]:
    return lambda p: as_json(
        {"inputs": value} if p == "v2" else {"instances" if p == "v1" else "texts": value}
    )


@dataclass(frozen=True)
class Case:
    id: str
    body: Callable[[Protocol], Body]
    status: int
    needle: str
    # The status on explain routes when it differs (limits that only explanations have).
    explain_status: int | None = None
    explain_needle: str | None = None
    protocols: tuple[Protocol, ...] = ("v2", "v1", "native")
    method: str = "POST"
    model: str = MODEL


MANY = ["cells divide"] * 10_000
ONE_MB = "cells divide " * 80_660  # 1,048,580 characters
LONG_BUT_ALLOWED = "cells divide " * 7_000  # 91,000 characters: truncated to max_length tokens
OVER_EXPLAIN_TEXTS = ["cells divide"] * (LIMITS.max_explain_texts + 1)
STEPS_CAP = f"n_steps must be between 1 and {LIMITS.max_explain_steps}"
# Allowed steps, but with two texts more work than one explain request may ask for.
OVER_WORK_STEPS = LIMITS.max_explain_work // 2 + 1
BROKEN_JSON = b'{"inputs": [1,'
NOT_AN_OBJECT = "not a JSON object; send a JSON object"

CASES = [
    # The body itself.
    Case("invalid-json", raw(b'{"inputs": [{"name": '), 400, "not valid JSON (Expecting value"),
    Case("json-number", raw(b"42"), 400, "a JSON number"),
    Case("json-true", raw(b"true"), 400, "a JSON boolean"),
    Case("json-null", raw(b"null"), 400, "JSON null"),
    Case("empty-body", raw(b""), 400, "request body is empty"),
    Case("whitespace-body", raw(b"  \n\t ", "text/plain"), 400, "empty or whitespace"),
    Case("invalid-utf8-plain", raw(b"\xff\xfe cells", "text/plain"), 400, "not valid UTF-8"),
    Case("invalid-utf8-in-json", bad_bytes_in_text, 400, "not valid UTF-8"),
    Case("object-without-texts", raw(b'{"foo": 1}'), 400, "(got keys: foo)"),
    # The KServe routes take a JSON object whatever the Content-Type says.
    *[
        Case(name, raw(data, content_type), 400, needle, protocols=KSERVE)
        for name, data, content_type, needle in [
            (
                "kserve-invalid-json-text-plain",
                BROKEN_JSON,
                "text/plain",
                "not valid JSON (Expecting value at line 1 column 15)",
            ),
            (
                "kserve-invalid-json-no-content-type",
                BROKEN_JSON,
                None,
                "not valid JSON (Expecting value at line 1 column 15)",
            ),
            (
                "kserve-plain-text",
                b"cells divide",
                "text/plain",
                "not valid JSON (Expecting value at line 1 column 1)",
            ),
            ("kserve-json-list", b'["cells divide"]', JSON_TYPE, f"a JSON array, {NOT_AN_OBJECT}"),
            ("kserve-json-string", b'"cells divide"', JSON_TYPE, f"a JSON string, {NOT_AN_OBJECT}"),
            (
                "kserve-json-string-as-text",
                b'"cells divide"',
                "text/plain",
                f"a JSON string, {NOT_AN_OBJECT}",
            ),
            ("kserve-native-object", b'{"text": "cells divide"}', JSON_TYPE, "neither inputs"),
            (
                "kserve-form",
                b"text=cells+divide",
                "application/x-www-form-urlencoded",
                "request has no body (TorchServe read it as form fields: text)",
            ),
        ]
    ],
    # The native routes stay lenient: text that looks like broken JSON is text.
    Case("native-brace-text", raw(BROKEN_JSON, "text/plain"), 200, "", protocols=("native",)),
    Case("native-json-list", raw(b'["cells divide"]'), 200, "", protocols=("native",)),
    Case("wrong-method-get", raw(b"", None), 400, "POST", method="GET"),
    Case("wrong-method-delete", raw(b"", None), 400, "POST", method="DELETE"),
    # The texts.
    Case("texts-not-a-list", native_texts(5), 400, "must be a"),
    Case("empty-text", texts(""), 400, "text 0 is empty or whitespace"),
    Case("whitespace-text", texts("ok", " \t\n "), 400, "text 1 is empty or whitespace"),
    Case("number-for-text", texts(42), 400, "must be a string or an object"),
    Case("null-for-text", texts(None), 400, "got NoneType"),
    Case("list-for-text", texts(["nested"]), 400, "got list"),
    Case("object-without-text", texts({"txt": "a"}), 400, '"text" must be a string'),
    Case("no-texts", texts(), 400, "no text"),
    Case("control-characters-only", texts("\x00\x01\x07\x7f"), 400, "no printable characters"),
    Case("zero-width-only", texts("\u200b\u200d\ufeff"), 400, "no printable characters"),
    Case("lone-surrogate", texts("cells \udc80 divide"), 400, "unpaired surrogate"),
    Case(
        "1mb-text",
        texts(ONE_MB),
        413,
        f"more than the limit of {LIMITS.max_text_chars} (max_text_chars)",
    ),
    Case(
        "10000-texts",
        texts(*MANY),
        413,
        f"more than the limit of {LIMITS.max_texts_per_request} (max_texts_per_request)",
    ),
    Case(
        "over-max-explain-texts",
        texts(*OVER_EXPLAIN_TEXTS),
        200,
        "",
        explain_status=413,
        explain_needle=f"more than the limit of {LIMITS.max_explain_texts} (max_explain_texts)",
    ),
    Case(
        "over-max-explain-work",
        texts("cells divide", "the acid", n_steps=OVER_WORK_STEPS),
        200,
        "",
        explain_status=413,
        explain_needle=(
            f"2 text(s) x {OVER_WORK_STEPS} steps = {2 * OVER_WORK_STEPS} text-steps, more than "
            f"the limit of {LIMITS.max_explain_work} (max_explain_work)"
        ),
    ),
    # Accepted on purpose: real text around odd characters, and a text longer than the model
    # reads, which is truncated to max_length tokens and answered with truncated: true.
    Case("emoji-and-controls-in-words", texts("cells 🧬 divide\x07 under ✨ the lens"), 200, ""),
    Case("long-text-truncated", texts(LONG_BUT_ALLOWED), 200, ""),
    # The parameters.
    Case(
        "parameters-not-object",
        lambda p: as_json(wrap(p, ["a"], [1])),
        400,
        "parameters must be an object, got list",
    ),
    Case("unknown-target", texts("a", target="geology"), 400, "unknown target label 'geology'"),
    Case("target-out-of-range", texts("a", target=7), 400, "target index 7 is out of range"),
    Case("n-steps-negative", texts("a", n_steps=-5), 400, STEPS_CAP),
    Case("n-steps-huge", texts("a", n_steps=10**12), 400, STEPS_CAP),
    Case("n-steps-float", texts("a", n_steps=2.5), 400, "n_steps must be an integer"),
    Case("n-steps-string", texts("a", n_steps="50"), 400, "n_steps must be an integer"),
    Case("internal-batch-zero", texts("a", internal_batch_size=0), 400, "internal_batch_size"),
    Case("merge-subwords-string", texts("a", merge_subwords="yes"), 400, "merge_subwords"),
    # KServe v2 tensors.
    *[
        Case(name, raw(json.dumps(body).encode()), 400, needle, protocols=("v2",))
        for name, body, needle in [
            ("v2-no-inputs", {"id": "x"}, "inputs"),
            ("v2-empty-inputs", {"inputs": []}, "inputs must be a non-empty list"),
            ("v2-inputs-not-list", {"inputs": "text"}, "inputs must be a non-empty list"),
            ("v2-input-not-object", {"inputs": [5]}, "inputs[0] must be an object"),
            (
                "v2-wrong-datatype",
                {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
                "datatype 'FP32'",
            ),
            ("v2-no-datatype", {"inputs": [{"name": "t", "data": ["a"]}]}, "datatype None"),
            (
                "v2-shape-disagrees",
                {"inputs": [{"name": "t", "shape": [3], "datatype": "BYTES", "data": ["a"]}]},
                "shape [3] disagrees with 1 data item",
            ),
            (
                "v2-shape-negative",
                {"inputs": [{"name": "t", "shape": [-2], "datatype": "BYTES", "data": ["a"]}]},
                "negative size",
            ),
            (
                "v2-shape-string",
                {"inputs": [{"name": "t", "shape": "1", "datatype": "BYTES", "data": ["a"]}]},
                "shape must be a list of integers",
            ),
            (
                "v2-no-data",
                {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES"}]},
                "data must be a list of strings",
            ),
            (
                "v2-id-not-string",
                {"id": [1], "inputs": [{"name": "t", "datatype": "BYTES", "data": ["a"]}]},
                "id must be a string",
            ),
        ]
    ],
    Case("v1-empty-instances", raw(b'{"instances": []}'), 400, "no text", protocols=("v1",)),
    # Refused by TorchServe's front end before the worker sees them.
    Case("unknown-model", texts("a"), 404, "Model not found: no-such-model", model="no-such-model"),
    Case("oversized-body", raw(b"x" * (MAX_REQUEST_BYTES + 1)), 413, ""),
]


@pytest.fixture(scope="module")
def server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    settings = BuildSettings(
        name=MODEL,
        profile="local",
        batch_size=8,
        max_batch_delay_ms=30,
        response_timeout_s=30,
        max_request_bytes=MAX_REQUEST_BYTES,
        handler=LIMITS,
    )
    with serving(tiny_bert, tmp_path_factory.mktemp("hostile"), settings) as running:
        yield running


@pytest.fixture(scope="module")
def workers(server: TorchServeProcess) -> list[tuple[int, str]]:
    return worker_states(server)


@pytest.fixture(scope="module")
def alone(server: TorchServeProcess) -> dict[str, list[float]]:
    """Each route's answer to the good request when it is alone in its batch."""
    return {
        route_id: result(route, send(server, route, good(route)))
        for route_id, route in ROUTES.items()
    }


def good(route: Route) -> Body:
    return as_json(wrap(route.protocol, [GOOD_TEXT]))


def send(
    server: TorchServeProcess,
    route: Route,
    body: Body,
    *,
    method: str = "POST",
    model: str = MODEL,
) -> requests.Response:
    data, content_type = body
    headers = {"Content-Type": content_type} if content_type else {}
    url = server.inference_url + route.path.format(m=model)
    return requests.request(method, url, data=data, headers=headers, timeout=60)


def result(route: Route, response: requests.Response) -> list[float]:
    """The numbers a good answer carries: probabilities, or importances when explaining."""
    assert response.status_code == 200, response.text
    body = response.json()
    if route.protocol == "v2" and not route.explain:
        return [float(v) for v in body["outputs"][1]["data"]]
    numbers: list[float] = []
    for item in answer_items(route, body):
        values = item["importances"] if route.explain else item["probabilities"].values()
        numbers.extend(float(v) for v in values)
    return numbers


def answer_items(route: Route, body: Any) -> list[dict[str, Any]]:
    """One dict per text, each with `truncated`, whatever the protocol."""
    if route.protocol == "v2":
        if route.explain:
            return list(body["outputs"][0]["data"])
        labels = body["outputs"][0]["data"]
        return [
            {"label": label, "truncated": truncated}
            for label, truncated in zip(labels, body["parameters"]["truncated"], strict=True)
        ]
    if route.protocol == "v1":
        return list(body["explanations" if route.explain else "predictions"])
    # Native: one object for a single text (plain body or {"text": ...}), else a list.
    return list(body) if isinstance(body, list) else [body]


def error_text(response: requests.Response) -> str:
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("code") == response.status_code, body
    return str(body.get("error") or body.get("message"))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_request_fails_alone(
    server: TorchServeProcess,
    workers: list[tuple[int, str]],
    alone: dict[str, list[float]],
    case: Case,
) -> None:
    """The case on every route that speaks its protocol, each next to a good request."""
    routes = {k: r for k, r in ROUTES.items() if r.protocol in case.protocols}
    jobs = [(route_id, which) for route_id in routes for which in ("bad", "good")]
    barrier = threading.Barrier(len(jobs))

    def go(job: tuple[str, str]) -> requests.Response:
        route = routes[job[0]]
        barrier.wait(timeout=30)
        if job[1] == "good":
            return send(server, route, good(route))
        body = case.body(route.protocol)
        return send(server, route, body, method=case.method, model=case.model)

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = dict(zip(jobs, pool.map(go, jobs), strict=True))

    for route_id, route in routes.items():
        bad = answers[route_id, "bad"]
        status = case.explain_status if route.explain and case.explain_status else case.status
        needle = case.explain_needle if route.explain and case.explain_needle else case.needle
        assert bad.status_code == status, (route_id, bad.text[:500])
        if status == 200:
            items = answer_items(route, bad.json())
            assert all(item["label"] in LABELS.values() for item in items), route_id
            expect_truncated = case.id == "long-text-truncated"
            assert [item["truncated"] for item in items] == [expect_truncated] * len(items)
        elif case.id == "oversized-body":
            # Netty's HttpObjectAggregator answers with an empty body; the reason phrase says it.
            assert (bad.reason, bad.content) == ("Request Entity Too Large", b""), route_id
        else:
            message = error_text(bad)
            assert needle in message, (route_id, message)
            # The handler's reason phrase is fixed per status: the details are in the body only.
            assert bad.reason == reason_phrase(status) or case.model != MODEL, route_id
        neighbour = result(route, answers[route_id, "good"])
        assert neighbour == pytest.approx(alone[route_id], abs=1e-5), route_id
    assert worker_states(server) == workers, "the Python worker restarted"


def test_a_storm_of_hostile_requests_shares_batches_with_good_ones(
    server: TorchServeProcess, workers: list[tuple[int, str]], alone: dict[str, list[float]]
) -> None:
    """Every worker-side case on v2 infer plus eight good requests, all released at once."""
    route = ROUTES["v2-infer"]
    hostile = [c for c in CASES if "v2" in c.protocols and c.model == MODEL and c.method == "POST"]
    hostile = [c for c in hostile if c.id != "oversized-body"]
    jobs: list[Case | None] = [*hostile, *[None] * 8]
    barrier = threading.Barrier(len(jobs))

    def go(case: Case | None) -> requests.Response:
        barrier.wait(timeout=60)
        body = good(route) if case is None else case.body(route.protocol)
        return send(server, route, body)

    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(go, jobs))
    for case, response in zip(jobs, responses, strict=True):
        if case is None:
            assert result(route, response) == pytest.approx(alone["v2-infer"], abs=1e-5)
        else:
            assert response.status_code == case.status, (case.id, response.text[:300])
    assert worker_states(server) == workers


KSERVE_ROUTES = ["v2-infer", "v2-explain", "v1-predict", "v1-explain"]


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/octet-stream"])
@pytest.mark.parametrize("route_id", KSERVE_ROUTES)
def test_kserve_routes_read_json_whatever_the_content_type(
    server: TorchServeProcess,
    alone: dict[str, list[float]],
    route_id: str,
    content_type: str | None,
) -> None:
    """A v2/v1 request sent as text/plain or without Content-Type is parsed as JSON, not text."""
    route = ROUTES[route_id]
    data, _ = good(route)
    response = send(server, route, (data, content_type))
    assert result(route, response) == pytest.approx(alone[route_id], abs=1e-5)


def test_v1_and_v2_routes_look_the_same_to_the_worker(server: TorchServeProcess) -> None:
    """TorchServe 0.12 adds the same headers on /v1/... and /v2/... routes (probed), so the body's
    key chooses between them: a v1 body on the v2 route gets a v1 answer. Pinned, not endorsed."""
    response = send(server, ROUTES["v2-infer"], as_json({"instances": [GOOD_TEXT]}))
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"predictions"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_the_worker_cannot_see_the_http_method(
    server: TorchServeProcess, alone: dict[str, list[float]], method: str
) -> None:
    """TorchServe 0.12 routes any method on /v2/models/NAME/infer to the worker and passes neither
    the method nor anything that depends on it (probed: same rows and headers as for POST), so a
    valid body is answered whatever the method. Without a body the worker's "request body is
    empty; POST ..." answer is all a wrong method gets (the wrong-method-* cases)."""
    route = ROUTES["v2-infer"]
    response = send(server, route, good(route), method=method)
    assert result(route, response) == pytest.approx(alone["v2-infer"], abs=1e-5)


def test_a_request_over_max_batch_tokens_is_split_and_answers_equal_each_text_alone(
    server: TorchServeProcess, workers: list[tuple[int, str]]
) -> None:
    route = ROUTES["v2-infer"]
    # The corpus sentences (~14 tokens each) and one text truncated at 64 tokens: ~200 padded
    # tokens at the corpus length, 11 x 64 = 704 padded to the longest, with max_batch_tokens 128.
    many = [*CORPUS, " ".join(["cells divide"] * 40)]
    singles = [result(route, send(server, route, as_json(wrap("v2", [t])))) for t in many]
    before = counters(server)
    together = result(route, send(server, route, as_json(wrap("v2", many))))
    after = wait_for_batches(server, before, 1)
    passes = after["scibert_forward_passes_total"] - before["scibert_forward_passes_total"]
    assert after["scibert_batches_total"] - before["scibert_batches_total"] == 1
    assert passes >= 3, f"{len(many)} texts over max_batch_tokens ran in {passes} pass(es)"
    width = len(LABELS)
    for i, single in enumerate(singles):
        assert together[i * width : (i + 1) * width] == pytest.approx(single, abs=1e-5), i
    assert worker_states(server) == workers


COUNTERS = ("scibert_forward_passes_total", "scibert_batches_total")


def counters(server: TorchServeProcess) -> dict[str, float]:
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    found = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in found:
            found[name] += float(line.rsplit(" ", 1)[1])
    return found


def wait_for_batches(
    server: TorchServeProcess, before: dict[str, float], batches: int
) -> dict[str, float]:
    """The counters once `batches` more batches show (the worker reports them asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        now = counters(server)
        done = now["scibert_batches_total"] - before["scibert_batches_total"] >= batches
        if done or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_there_are_at_least_thirty_cases_on_every_route() -> None:
    per_route = {
        route_id: sum(1 for case in CASES if route.protocol in case.protocols)
        for route_id, route in ROUTES.items()
    }
    assert min(per_route.values()) >= 30, per_route


@pytest.mark.parametrize(
    ("options", "request_bytes", "handler"),
    [
        ([], 10 * 1024 * 1024, {}),
        (
            ["--max-request-size", "2MiB", "--max-texts-per-request", "64",
             "--max-text-chars", "5000", "--max-explain-texts", "4", "--max-explain-steps", "100",
             "--max-explain-work", "300", "--max-batch-tokens", "4096"],
            2 * 1024 * 1024,
            {"max_texts_per_request": 64, "max_text_chars": 5000, "max_explain_texts": 4,
             "max_explain_steps": 100, "max_explain_work": 300, "max_batch_tokens": 4096},
        ),
        (["--max-request-size", "3MB"], 3_000_000, {}),
    ],
    ids=["safe-defaults", "all-set", "decimal-unit"],
)  # fmt: skip
def test_limits_are_build_options(
    tiny_bert: Path,
    tmp_path: Path,
    options: list[str],
    request_bytes: int,
    handler: dict[str, int],
) -> None:
    from click.testing import CliRunner

    from scibert_pack.cli import cli
    from scibert_pack.config.properties import parse

    out = tmp_path / "out"
    built = CliRunner().invoke(
        cli, ["build", str(tiny_bert), "--name", "m", "-o", str(out), *options]
    )
    assert built.exit_code == 0, built.output
    config = parse((out / "config" / "config.properties").read_text())
    assert config["max_request_size"] == str(request_bytes)
    report = json.loads((out / "build-report.json").read_text())
    assert report["settings"]["server"]["max_request_bytes"] == request_bytes
    defaults = {
        "max_texts_per_request": 256,
        "max_text_chars": 100_000,
        "max_explain_texts": 16,
        "max_explain_steps": 500,
        "max_explain_work": 1000,
        "max_batch_tokens": 16384,
    }
    limits = {key: report["settings"]["handler"][key] for key in defaults}
    assert limits == {**defaults, **handler}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10XB", "Error: Invalid value for '--max-request-size': '10XB' is not a size; give bytes "
         "or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 10MiB"),
        ("512", "Error: --max-request-size 512 is out of range (expected 1024 to 2147483647); "
         "pass --max-request-size between 1024 and 2147483647"),
        ("4GiB", "Error: --max-request-size 4294967296 is out of range (expected 1024 to "
         "2147483647); pass --max-request-size between 1024 and 2147483647"),
    ],
    ids=["unknown-unit", "too-small", "too-big-for-torchserve"],
)  # fmt: skip
def test_bad_request_size_is_refused(
    tiny_bert: Path, tmp_path: Path, value: str, message: str
) -> None:
    from click.testing import CliRunner

    from scibert_pack.cli import cli

    args = ["build", str(tiny_bert), "--name", "m", "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, "--max-request-size", value])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == message
    assert not (tmp_path / "o").exists()
