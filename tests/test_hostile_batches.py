"""Requests that used to kill a worker or fail their whole batch, against a real TorchServe.

Each hostile body is sent on every route that speaks its protocol while 12 good requests run
beside it, all released at one barrier (the archive batches up to 24 requests for 50 ms, so they
share batches). Every good request must get exactly the answer it gets alone, the hostile one its
4xx with the fixed ASCII reason phrase and a JSON body naming the problem, and no worker may
restart (pids from the management API). The model's labels hold non-ASCII characters
(`médecine`), which error messages list.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from support.build_and_serve import serving
from support.soak_load import workers
from support.tiny_models import FRENCH_LABELS, make_tiny_classifier
from test_hostile_input import ROUTES, Protocol, Route, answer_items, as_json, result, wrap

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.handlers.render import reason_phrase
from scibert_pack.handlers.settings import HandlerSettings
from scibert_pack.serving.server import TorchServeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL = "tiny"
GOOD_TEXT = "the catalyst speeds up the reaction between the acid and the base ."
GOOD_PER_CASE = 12
JSON_TYPE = "application/json"
LABEL_LIST = "labels: chimie, médecine, physique"
DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b"1" * 5_000
THREE_MB_KEY = "k" * 3_000_000
HUGE_SHAPE = (
    b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": ['
    + b",".join([b"9" * 400] * 14_000)
    + b'], "data": ["'
    + GOOD_TEXT.encode()
    + b'"]}]}'
)

Body = tuple[bytes, str | None, dict[str, str]]


def body(obj: object, **headers: str) -> Body:
    data, content_type = as_json(obj)
    return data, content_type, headers


def texts(*items: object, **parameters: object) -> Callable[[Protocol], Body]:
    return lambda p: body(wrap(p, list(items), parameters or None))


def raw(data: bytes, content_type: str | None = JSON_TYPE, **headers: str) -> Callable[..., Body]:
    return lambda p: (data, content_type, headers)


def huge_n_steps(protocol: Protocol) -> Body:
    data, content_type = as_json(wrap(protocol, [GOOD_TEXT], {"n_steps": 7}))
    return data.replace(b'"n_steps": 7', b'"n_steps": ' + HUGE_INT), content_type, {}


def gzipped(headers: dict[str, str]) -> Callable[[Protocol], Body]:
    def make(protocol: Protocol) -> Body:
        data, content_type = as_json(wrap(protocol, [GOOD_TEXT]))
        return gzip.compress(data), content_type, headers

    return make


def v2_input(name: str) -> Callable[[Protocol], Body]:
    tensor = {"name": name, "shape": [1], "datatype": "FP32", "data": [1.0]}
    return lambda p: body({"inputs": [tensor]})


@dataclass(frozen=True)
class Hostile:
    id: str
    body: Callable[[Protocol], Body]
    needle: str
    status: int = 400
    protocols: tuple[Protocol, ...] = ("v2", "v1", "native")
    explain_only: bool = False


CASES = [
    Hostile("non-ascii-key", raw('{"é": 1}'.encode()), "(got keys: '\\xe9')"),
    Hostile("crlf-key", raw(b'{"a\\r\\nb": 1}'), "(got keys: 'a\\r\\nb')"),
    Hostile("lone-surrogate-key", raw(b'{"\\udc80": 1}'), "(got keys: '\\udc80')"),
    Hostile("3mb-key", raw(json.dumps({THREE_MB_KEY: 1}).encode()), "(got keys: 'kkkkkkkkkk"),
    Hostile(
        "non-ascii-input-name",
        v2_input("entrée\r\n"),
        "input 'entr\\xe9e\\r\\n' has datatype 'FP32'",
        protocols=("v2",),
    ),
    Hostile(
        "n-steps-with-accents",
        texts(GOOD_TEXT, n_steps="cinquanté"),
        "n_steps must be an integer, got 'cinquant\\xe9'",
    ),
    Hostile(
        "target-with-accents",
        texts(GOOD_TEXT, target="médecinè"),
        f"unknown target label 'm\\xe9decin\\xe8'; {LABEL_LIST}",
    ),
    Hostile(
        "unknown-target-lists-non-ascii-labels",
        texts(GOOD_TEXT, target="biology"),
        f"unknown target label 'biology'; {LABEL_LIST}",
        explain_only=True,
    ),
    Hostile(
        "blog-form-target-out-of-range",
        texts(json.dumps({"text": GOOD_TEXT, "target": 99})),
        "target index 99 is out of range; the model has labels 0..2",
    ),
    Hostile(
        "deep-brackets-body",
        raw(DEEP),
        "request body nests JSON arrays/objects too deeply to read",
    ),
    Hostile(
        "deep-brackets-in-brace-text",
        texts('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "starts with '{' but nests JSON arrays/objects too deeply to read",
    ),
    Hostile(
        "5000-digit-integer",
        huge_n_steps,
        "request body holds a JSON number too long to read (over 4300 digits)",
    ),
    Hostile(
        # 5.6 MB: multiplied out, the sizes held the worker past its response timeout.
        "shape-of-14000-huge-sizes",
        raw(HUGE_SHAPE),
        "disagrees with 1 data item(s)",
        protocols=("v2",),
    ),
    Hostile(
        "gzip-with-content-encoding",
        gzipped({"Content-Encoding": "gzip"}),
        # The front end neither decompresses nor drops the header: the handler sees both.
        "request body is compressed (Content-Encoding: gzip); Content-Encoding is not "
        "supported: send uncompressed JSON without that header",
    ),
    Hostile(
        "gzip-magic-bytes",
        gzipped({}),
        "request body is gzip-compressed (it starts with the gzip magic bytes 1f 8b); "
        "Content-Encoding is not supported: send uncompressed JSON",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServeProcess]:
    work = tmp_path_factory.mktemp("hostile-batches")
    model = make_tiny_classifier(work / "model", labels=FRENCH_LABELS)
    settings = BuildSettings(
        name=MODEL,
        profile="local",
        batch_size=24,
        max_batch_delay_ms=50,
        response_timeout_s=60,
        max_request_bytes=8 * 1024 * 1024,
        handler=HandlerSettings(explain_steps=8),
    )
    with serving(model, work, settings) as running:
        yield running


def pids(server: TorchServeProcess) -> list[int]:
    return sorted(int(w["pid"]) for w in workers(server))


@pytest.fixture(scope="module")
def worker_pids(server: TorchServeProcess) -> list[int]:
    found = pids(server)
    assert found, "the management API lists no worker"
    return found


def post(server: TorchServeProcess, route: Route, sent: Body) -> requests.Response:
    data, content_type, headers = sent
    headers = {**headers, **({"Content-Type": content_type} if content_type else {})}
    url = server.inference_url + route.path.format(m=MODEL)
    return requests.post(url, data=data, headers=headers, timeout=120)


def good(route: Route) -> Body:
    return body(wrap(route.protocol, [GOOD_TEXT]))


@pytest.fixture(scope="module")
def alone(server: TorchServeProcess) -> dict[str, list[float]]:
    return {rid: result(route, post(server, route, good(route))) for rid, route in ROUTES.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_request_next_to_twelve_good_ones(
    server: TorchServeProcess,
    worker_pids: list[int],
    alone: dict[str, list[float]],
    case: Hostile,
) -> None:
    hostile = {
        rid: route
        for rid, route in ROUTES.items()
        if route.protocol in case.protocols and (route.explain or not case.explain_only)
    }
    route_ids = list(ROUTES)
    goods = [route_ids[i % len(route_ids)] for i in range(GOOD_PER_CASE)]
    jobs = [(rid, "bad") for rid in hostile] + [(rid, f"good-{i}") for i, rid in enumerate(goods)]
    barrier = threading.Barrier(len(jobs))

    def go(job: tuple[str, str]) -> requests.Response:
        route = ROUTES[job[0]]
        sent = case.body(route.protocol) if job[1] == "bad" else good(route)
        barrier.wait(timeout=60)
        return post(server, route, sent)

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = dict(zip(jobs, pool.map(go, jobs), strict=True))

    for rid in hostile:
        bad = answers[rid, "bad"]
        assert bad.status_code == case.status, (rid, bad.text[:300])
        assert bad.reason == reason_phrase(case.status), rid
        error = bad.json()
        assert error["code"] == case.status, error
        assert case.needle in error["error"], (rid, error["error"][:300])
        assert len(error["error"]) < 600, rid
    for (rid, which), response in answers.items():
        if which != "bad":
            got = result(ROUTES[rid], response)
            assert got == pytest.approx(alone[rid], abs=1e-5), (rid, which)
    assert pids(server) == worker_pids, "a worker restarted"


def test_the_blog_form_target_is_honoured_per_text(
    server: TorchServeProcess, worker_pids: list[int]
) -> None:
    route = ROUTES["v2-explain"]
    data = [
        json.dumps({"text": GOOD_TEXT, "target": 0}),
        json.dumps({"text": GOOD_TEXT, "target": "médecine"}),
        json.dumps({"text": GOOD_TEXT, "note": "not the blog form"}),
    ]
    response = post(server, route, body(wrap("v2", data)))
    items = answer_items(route, response.json())
    assert [item["target"] for item in items[:2]] == ["chimie", "médecine"]
    # The third is the literal text (a JSON-looking sentence), explained for its prediction.
    assert items[2]["target"] == items[2]["label"]
    assert '"' in items[2]["words"] or "note" in items[2]["words"]
    conflict = post(server, route, body(wrap("v2", data[:1], {"target": 2})))
    assert (conflict.status_code, conflict.reason) == (400, "Bad Request")
    assert "names target 'chimie' but parameters.target is 'physique'" in conflict.json()["error"]
    assert pids(server) == worker_pids


def test_tiny_model_has_the_labels_the_cases_expect(tmp_path: Path) -> None:
    config = json.loads((make_tiny_classifier(tmp_path, labels=FRENCH_LABELS) / "config.json")
                        .read_text(encoding="utf-8"))  # fmt: skip
    assert list(config["id2label"].values()) == list(FRENCH_LABELS.values())
