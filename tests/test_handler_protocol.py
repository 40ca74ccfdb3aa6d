"""Parsing one TorchServe row into a typed request: accepted shapes and pinned refusals."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from scibert_pack.handlers.protocol import (
    MissingBody,
    RawRow,
    Request,
    RequestError,
    Route,
    parse_request,
    request_route,
    shown,
)
from scibert_pack.handlers.render import reason_phrase
from scibert_pack.handlers.settings import HandlerSettings

LABELS = ("biology", "chemistry", "physics")
SETTINGS = HandlerSettings(
    max_texts_per_request=3, max_text_chars=40, max_explain_steps=100, max_explain_work=120
)
JSON = "application/json"
KSERVE_SHAPE = '{"inputs": [...]} (KServe v2) or {"instances": [...]} (KServe v1)'
JSON_HINT = "with the header Content-Type: application/json"


def v2(data: object, shape: object = -1, datatype: str = "BYTES", **extra: object) -> dict:
    return {
        "id": "r1",
        "inputs": [{"name": "text", "shape": shape, "datatype": datatype, "data": data}],
        **extra,
    }


def parse(
    body: object,
    content_type: str | None = JSON,
    explain: bool = False,
    route: Route | None = None,
) -> Request:
    return parse_request(RawRow(body, content_type, explain, route), SETTINGS, LABELS)


GOOD = [
    pytest.param(
        v2('{"text": "Risk assessment implications."}'),
        "v2",
        ("Risk assessment implications.",),
        False,
        id="v2-blog-shape-minus-1-json-string",
    ),
    pytest.param(v2(["a b", "c d"], shape=[2]), "v2", ("a b", "c d"), False, id="v2-list"),
    pytest.param(v2(["a b", "c d"], shape=[1, 2]), "v2", ("a b", "c d"), False, id="v2-2d-shape"),
    pytest.param(v2(["a", "b"], shape=[-1, 1]), "v2", ("a", "b"), False, id="v2-wildcard-shape"),
    pytest.param(
        v2([{"text": "x y"}, "{not json"]),
        "v2",
        ("x y", "{not json"),
        False,
        id="v2-object-item-and-brace-text",
    ),
    pytest.param(
        {
            "inputs": [
                {"name": "a", "datatype": "BYTES", "shape": [1], "data": ["one"]},
                {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["two"]},
            ]
        },
        "v2",
        ("one", "two"),
        False,
        id="v2-two-inputs",
    ),
    pytest.param(
        {"instances": ["a", {"text": "b"}, '{"text": "c"}']},
        "v1",
        ("a", "b", "c"),
        False,
        id="v1-mixed-items",
    ),
    pytest.param("plain words", "native", ("plain words",), True, id="native-text-plain"),
    pytest.param({"text": "one"}, "native", ("one",), True, id="native-text-object"),
    pytest.param({"texts": ["one", "two"]}, "native", ("one", "two"), False, id="native-texts"),
    pytest.param(["one", {"text": "two"}], "native", ("one", "two"), False, id="native-list"),
    pytest.param(
        bytearray(b"caf\xc3\xa9 au lait"), "native", ("café au lait",), True, id="native-utf8-bytes"
    ),
    pytest.param(
        bytearray(b'{"texts": ["p", "q"]}'), "native", ("p", "q"), False, id="native-json-bytes"
    ),
    pytest.param(
        bytearray(b"[1] Smith et al. found"),
        "native",
        ("[1] Smith et al. found",),
        True,
        id="native-bytes-bracket-not-json",
    ),
]


@pytest.mark.parametrize(("body", "protocol", "texts", "single"), GOOD)
def test_accepted_bodies(body: object, protocol: str, texts: tuple[str, ...], single: bool) -> None:
    content_type = None if isinstance(body, bytearray) else JSON
    request = parse(body, content_type)
    assert (request.protocol, request.texts, request.single) == (protocol, texts, single)
    assert request.action == "predict"


def test_v2_id_and_explain_header() -> None:
    request = parse(v2(["a"]), explain=True)
    assert (request.request_id, request.action) == ("r1", "explain")


# (target, n_steps, internal_batch_size, merge_subwords, tolerance): without n_steps a request
# is in tolerance mode (n_steps: the ladder's first rung, 8), with it exactly that many steps.
OPTIONS = [
    pytest.param({}, (None, 8, 64, True, 1e-3), id="defaults-from-settings"),
    pytest.param({"target": "physics"}, (2, 8, 64, True, 1e-3), id="target-label"),
    pytest.param({"target": 1}, (1, 8, 64, True, 1e-3), id="target-index"),
    pytest.param(
        {"n_steps": 7, "internal_batch_size": 3, "merge_subwords": False},
        (None, 7, 3, False, None),
        id="overrides",
    ),
    pytest.param({"n_steps": 50}, (None, 50, 64, True, None), id="explicit-steps-no-tolerance"),
    pytest.param({"tolerance": 0.01}, (None, 8, 64, True, 0.01), id="tolerance"),
    pytest.param({"tolerance": 1e-6}, (None, 8, 64, True, 1e-6), id="tolerance-lowest"),
    pytest.param({"granularity": "pieces"}, (None, 8, 64, False, 1e-3), id="granularity-pieces"),
]


@pytest.mark.parametrize(("params", "expected"), OPTIONS)
def test_explain_options(params: dict, expected: tuple) -> None:
    options = parse(v2(["a"], parameters=params)).options
    got = (
        options.target,
        options.n_steps,
        options.internal_batch_size,
        options.merge_subwords,
        options.tolerance,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("settings", "params", "expected"),
    [
        (HandlerSettings(explain_tolerance=0), {}, (50, None)),
        (HandlerSettings(explain_tolerance=0), {"tolerance": 0.002}, (8, 0.002)),
        (HandlerSettings(explain_tolerance=1e-4), {}, (8, 1e-4)),
        (HandlerSettings(max_explain_steps=5, explain_steps=5), {}, (5, 1e-3)),
    ],
    ids=["mode-off-uses-explain-steps", "mode-off-request-asks", "server-tolerance", "small-cap"],
)
def test_tolerance_mode_choice(
    settings: HandlerSettings, params: dict, expected: tuple[int, float | None]
) -> None:
    raw = RawRow(v2(["a"], parameters=params), JSON, True, "kserve")
    options = parse_request(raw, settings, LABELS).options
    assert (options.n_steps, options.tolerance) == expected
    assert options.max_steps == settings.max_explain_steps


# The KServe blog post's explain body as printed: its inner object's quotes are not escaped.
BLOG_EXPLAIN_AS_PRINTED = b"""{
"id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298",
"inputs": [{
"name": "4b7c7d4a-51e4-43c8-af61-04639f6ef4bc",
"shape": -1,
"datatype": "BYTES",
"data": "{"text":"Risk assessment implications."}"
}
]
}"""

BAD = [
    pytest.param(
        bytearray(BLOG_EXPLAIN_AS_PRINTED),
        JSON,
        400,
        "request body is not valid JSON (Expecting ',' delimiter at line 7 column 12): a JSON "
        'object inside a string value must escape its quotes, as in "data": "{\\"text\\": '
        '\\"...\\"}" (the KServe blog post\'s payload has none); fix the JSON or send text/plain',
        id="blog-payload-unescaped",
    ),
    pytest.param(
        bytearray(b'{"x":'),
        JSON,
        400,
        "request body is not valid JSON (Expecting value at line 1 column 6); "
        "fix the JSON or send text/plain",
        id="bad-json",
    ),
    pytest.param(
        bytearray(b"\xff\xfe abc"),
        "text/plain",
        400,
        "request body is not valid UTF-8 (invalid start byte at byte 0); send UTF-8 encoded text",
        id="bad-utf8",
    ),
    pytest.param(
        bytearray(b""),
        JSON,
        400,
        "request body is empty; POST text (Content-Type: text/plain) or a JSON request "
        "(Content-Type: application/json) to this route",
        id="empty-body",
    ),
    pytest.param(
        MissingBody(),
        None,
        400,
        "request has no body; send text (Content-Type: text/plain) or JSON "
        "(Content-Type: application/json)",
        id="no-body",
    ),
    pytest.param(
        MissingBody(("text",)),
        "application/x-www-form-urlencoded",
        400,
        "request has no body (TorchServe read it as form fields: text); send text "
        "(Content-Type: text/plain) or JSON (Content-Type: application/json)",
        id="form-fields",
    ),
    pytest.param(
        None,
        JSON,
        400,
        'JSON body must be an object or a list, got JSON null; send {"text": "..."} or a '
        "KServe v1/v2 request",
        id="json-null",
    ),
    pytest.param(
        42,
        JSON,
        400,
        'JSON body must be an object or a list, got a JSON number; send {"text": "..."} or a '
        "KServe v1/v2 request",
        id="json-number",
    ),
    pytest.param(
        {"foo": 1},
        JSON,
        400,
        "JSON object has none of the keys inputs (KServe v2), instances (KServe v1), "
        'text, texts (got keys: foo); send e.g. {"text": "..."}',
        id="unknown-object",
    ),
    pytest.param(
        {"inputs": []},
        JSON,
        400,
        "inputs must be a non-empty list of BYTES tensors",
        id="v2-no-inputs",
    ),
    pytest.param(
        v2([1.0], datatype="FP32"),
        JSON,
        400,
        "input 'text' has datatype 'FP32'; this model takes text: send datatype 'BYTES'",
        id="v2-wrong-datatype",
    ),
    pytest.param(
        v2(["a", "b"], shape=[3]),
        JSON,
        400,
        "input 'text' shape [3] disagrees with 2 data item(s)",
        id="v2-shape-mismatch",
    ),
    # Thousands of 400-digit sizes: multiplied out, they held a worker for minutes.
    pytest.param(
        v2(["a"], shape=[10**400] * 5000),
        JSON,
        400,
        "input 'text' shape [100000000000000000...000000000000000... disagrees with 1 data item(s)",
        id="v2-shape-of-huge-sizes",
    ),
    pytest.param(
        v2(["a"], shape=[-1] + [10**400] * 5000),
        JSON,
        400,
        "input 'text' shape [-1, 100000000000000000...00000000000... disagrees with 1 data item(s)",
        id="v2-wildcard-shape-of-huge-sizes",
    ),
    pytest.param(
        v2(["a"], shape="1"),
        JSON,
        400,
        "input 'text' shape must be a list of integers, got '1'",
        id="v2-shape-string",
    ),
    pytest.param(
        v2(7),
        JSON,
        400,
        "input 'text' data must be a list of strings or a string, got int",
        id="v2-data-number",
    ),
    pytest.param(
        v2(["a", 3]),
        JSON,
        400,
        "input 'text' data[1] must be a string or an object with a \"text\" string, got int",
        id="v2-non-string-item",
    ),
    pytest.param(v2([]), JSON, 400, "request holds no text; send at least one", id="v2-empty-data"),
    pytest.param(
        {"instances": "a"},
        JSON,
        400,
        "instances must be a list of texts, got str",
        id="v1-instances-not-list",
    ),
    pytest.param(
        {"text": 5}, JSON, 400, 'body "text" must be a string, got int', id="text-not-string"
    ),
    pytest.param(
        {"texts": ["ok", "  \n"]},
        JSON,
        400,
        "text 1 is empty or whitespace; send some words",
        id="whitespace-text",
    ),
    pytest.param(
        {"texts": ["a", "b", "c", "d"]},
        JSON,
        413,
        "request holds 4 texts, more than the limit of 3 (max_texts_per_request); split it",
        id="too-many-texts",
    ),
    pytest.param(
        {"text": "x" * 41},
        JSON,
        413,
        "text 0 has 41 characters, more than the limit of 40 (max_text_chars); shorten it",
        id="text-too-long",
    ),
    pytest.param(
        {"texts": ["ok", "\x00\x07\u200b"]},
        JSON,
        400,
        "text 1 has no printable characters (only control or format characters); send some words",
        id="control-characters-only",
    ),
    pytest.param(
        {"text": "cells \udc80 divide"},
        JSON,
        400,
        "text 0 holds an unpaired surrogate '\\udc80' at character 6; send valid Unicode text",
        id="lone-surrogate",
    ),
    pytest.param(
        v2(["a"], parameters={"target": "maths"}),
        JSON,
        400,
        "unknown target label 'maths'; labels: biology, chemistry, physics",
        id="unknown-target-label",
    ),
    pytest.param(
        v2(["a"], parameters={"target": 3}),
        JSON,
        400,
        "target index 3 is out of range; the model has labels 0..2",
        id="target-index-out-of-range",
    ),
    pytest.param(
        v2(["a"], parameters={"n_steps": 0}),
        JSON,
        400,
        "n_steps must be between 1 and 100, got 0",
        id="n-steps-zero",
    ),
    pytest.param(
        v2(["a"], parameters={"n_steps": 101}),
        JSON,
        400,
        "n_steps must be between 1 and 100, got 101",
        id="n-steps-over-cap",
    ),
    pytest.param(
        v2(["a"], parameters={"n_steps": "5"}),
        JSON,
        400,
        "n_steps must be an integer, got '5'",
        id="n-steps-string",
    ),
    *[
        pytest.param(
            v2(["a"], parameters={"tolerance": value}),
            JSON,
            400,
            f"tolerance {problem}, got {shown}; send the |convergence delta| to reach (an error "
            "in the class probability), e.g. 0.001, between 1e-06 and 0.1",
            id=f"tolerance-{name}",
        )
        for name, value, problem, shown in [
            ("zero", 0, "must be between 1e-06 and 0.1", "0"),
            ("negative", -0.001, "must be between 1e-06 and 0.1", "-0.001"),
            ("too-small", 1e-9, "must be between 1e-06 and 0.1", "1e-09"),
            ("too-big", 0.5, "must be between 1e-06 and 0.1", "0.5"),
            ("string", "0.01", "must be a number", "'0.01'"),
            ("bool", True, "must be a number", "True"),
            ("null", None, "must be a number", "None"),
            ("list", [0.01], "must be a number", "[0.01]"),
        ]
    ],
    pytest.param(
        v2(["a"], parameters={"tolerance": 0.01, "n_steps": 16}),
        JSON,
        400,
        "parameters give both n_steps and tolerance; send n_steps for exactly that many "
        "integration steps or tolerance for the fewest steps that reach it, not both",
        id="tolerance-and-n-steps",
    ),
    pytest.param(
        v2(["a"], parameters={"merge_subwords": "yes"}),
        JSON,
        400,
        "merge_subwords must be true or false, got 'yes'",
        id="merge-not-bool",
    ),
    pytest.param(
        v2(["a"], parameters=[1]),
        JSON,
        400,
        "parameters must be an object, got list",
        id="parameters-not-object",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "code", "message"), BAD)
def test_refused_bodies(body: object, content_type: str | None, code: int, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body, content_type)
    assert (caught.value.code, caught.value.message) == (code, message)


def test_bad_json_without_json_content_type_is_plain_text() -> None:
    """Only a JSON content type makes a broken-JSON body an error; otherwise it is text."""
    assert parse(bytearray(b'{"x":'), "application/octet-stream").texts == ('{"x":',)


def test_v2_blog_payload_round_trips_through_json() -> None:
    blog = json.loads(
        '{"id": "42", "inputs": [{"name": "input-0", "shape": -1, "datatype": "BYTES", '
        '"data": "{\\"text\\": \\"Risk assessment implications.\\"}"}]}'
    )
    assert parse(blog).texts == ("Risk assessment implications.",)


def test_explain_has_its_own_text_cap() -> None:
    settings = HandlerSettings(max_texts_per_request=10, max_explain_texts=2)
    body = {"texts": ["a", "b", "c"]}
    assert parse_request(RawRow(body, JSON, False), settings, LABELS).texts == ("a", "b", "c")
    with pytest.raises(RequestError) as caught:
        parse_request(RawRow(body, JSON, True), settings, LABELS)
    assert (caught.value.code, caught.value.message) == (
        413,
        "explain request holds 3 texts, more than the limit of 2 (max_explain_texts); split it, "
        "or ask the infer route for predictions only",
    )


def test_control_characters_and_emoji_inside_words_are_text() -> None:
    text = "cells\x07 divide \U0001f9ec under the microscope\u200b"
    assert parse({"text": text}).texts == (text,)


ROUTES = [
    pytest.param("", "True", "native", id="explanations"),
    pytest.param("", "False", "native", id="predictions"),
    pytest.param("/extra/segments", "False", "native", id="predictions-with-extra-path"),
    pytest.param(None, "False", "kserve", id="v2-infer-or-v1-predict"),
    pytest.param(None, "True", "kserve", id="v2-or-v1-explain"),
    pytest.param(None, None, None, id="invocations-or-in-process"),
]


@pytest.mark.parametrize(("url_path", "explain", "route"), ROUTES)
def test_route_from_the_headers_torchserve_adds(
    url_path: str | None, explain: str | None, route: str | None
) -> None:
    assert request_route(url_path, explain) == route


# -- KServe routes: the body must be a JSON object, whatever the Content-Type ------------------

KSERVE_GOOD = [
    pytest.param(v2(["a b"]), JSON, "v2", ("a b",), id="v2-decoded-by-torchserve"),
    pytest.param(json.dumps(v2(["a b"])), "text/plain", "v2", ("a b",), id="v2-sent-as-text-plain"),
    pytest.param(
        bytearray(json.dumps(v2(["a b"])).encode()), None, "v2", ("a b",), id="v2-no-content-type"
    ),
    pytest.param(
        bytearray(json.dumps(v2(["a b"])).encode()),
        "application/octet-stream",
        "v2",
        ("a b",),
        id="v2-octet-stream",
    ),
    pytest.param(
        '{"instances": ["x"]}', "text/plain; charset=utf-8", "v1", ("x",), id="v1-text-plain"
    ),
    pytest.param({"instances": ["x"]}, JSON, "v1", ("x",), id="v1-decoded"),
]


@pytest.mark.parametrize(("body", "content_type", "protocol", "texts"), KSERVE_GOOD)
def test_kserve_route_parses_json_whatever_the_content_type(
    body: object, content_type: str | None, protocol: str, texts: tuple[str, ...]
) -> None:
    request = parse(body, content_type, route="kserve")
    assert (request.protocol, request.texts, request.single) == (protocol, texts, False)


KSERVE_BAD = [
    pytest.param(
        '{"inputs": [1,',
        "text/plain",
        f"request body is not valid JSON (Expecting value at line 1 column 15); "
        f"send a JSON object, {KSERVE_SHAPE}",
        id="invalid-json-text-plain",
    ),
    pytest.param(
        bytearray(b'{"inputs": [1,'),
        None,
        f"request body is not valid JSON (Expecting value at line 1 column 15); "
        f"send a JSON object, {KSERVE_SHAPE}",
        id="invalid-json-no-content-type",
    ),
    pytest.param(
        bytearray(b'{\n  "inputs": [1,,]}'),
        JSON,
        f"request body is not valid JSON (Expecting value at line 2 column 16); "
        f"send a JSON object, {KSERVE_SHAPE}",
        id="invalid-json-second-line",
    ),
    pytest.param(
        "cells divide",
        "text/plain",
        f"request body is not valid JSON (Expecting value at line 1 column 1); "
        f"send a JSON object, {KSERVE_SHAPE}",
        id="plain-text",
    ),
    pytest.param(
        ["a", "b"],
        JSON,
        f"request body is a JSON array, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        id="json-list",
    ),
    pytest.param(
        "cells divide",
        JSON,
        f"request body is a JSON string, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        id="json-string-decoded",
    ),
    pytest.param(
        '"cells divide"',
        "text/plain",
        f"request body is a JSON string, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        id="json-string-as-text",
    ),
    pytest.param(
        7,
        JSON,
        f"request body is a JSON number, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        id="json-number",
    ),
    pytest.param(
        False,
        JSON,
        f"request body is a JSON boolean, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        id="json-boolean",
    ),
    pytest.param(
        None,
        JSON,
        f"request body is JSON null, not a JSON object; send a JSON object, {KSERVE_SHAPE}",
        id="json-null",
    ),
    pytest.param(
        {"text": "a"},
        JSON,
        "JSON object has neither inputs (KServe v2) nor instances (KServe v1) (got keys: text); "
        f'send {KSERVE_SHAPE}, or send {{"text": "..."}} to /predictions/NAME',
        id="native-object",
    ),
    pytest.param(
        bytearray(b""),
        JSON,
        f"request body is empty; POST a JSON object, {KSERVE_SHAPE}, {JSON_HINT}",
        id="empty",
    ),
    pytest.param(
        " \n",
        "text/plain",
        f"request body is empty or whitespace; POST a JSON object, {KSERVE_SHAPE}, {JSON_HINT}",
        id="whitespace",
    ),
    pytest.param(
        MissingBody(("text",)),
        "application/x-www-form-urlencoded",
        f"request has no body (TorchServe read it as form fields: text); send a JSON object, "
        f"{KSERVE_SHAPE}, {JSON_HINT}",
        id="form",
    ),
    pytest.param(
        bytearray(b"\xff{}"),
        None,
        "request body is not valid UTF-8 (invalid start byte at byte 0); send UTF-8 encoded text",
        id="invalid-utf8",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "message"), KSERVE_BAD)
def test_kserve_route_refuses_what_is_not_a_json_object(
    body: object, content_type: str | None, message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body, content_type, route="kserve")
    assert (caught.value.code, caught.value.message) == (400, message)


# -- native routes: plain text or JSON, as before ---------------------------------------------

NATIVE = [
    pytest.param('{"inputs": [1,', "text/plain", ('{"inputs": [1,',), id="brace-text-plain"),
    pytest.param("[1] Smith et al.", "text/plain", ("[1] Smith et al.",), id="bracket-text"),
    pytest.param(["one", "two"], JSON, ("one", "two"), id="json-list"),
    pytest.param("one", JSON, ("one",), id="json-string"),
    pytest.param(v2(["a"]), JSON, ("a",), id="v2-body-still-accepted"),
    pytest.param(
        bytearray(b'{"texts": ["p"'), "application/octet-stream", ('{"texts": ["p"',), id="bytes"
    ),
]


@pytest.mark.parametrize(("body", "content_type", "texts"), NATIVE)
def test_native_route_takes_text_or_json(
    body: object, content_type: str, texts: tuple[str, ...]
) -> None:
    assert parse(body, content_type, route="native").texts == texts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            bytearray(b'{"text": "a"'),
            "request body is not valid JSON (Expecting ',' delimiter at line 1 column 13); "
            "fix the JSON or send text/plain",
        ),
        (
            bytearray(b"[1, 2"),
            "request body is not valid JSON (Expecting ',' delimiter at line 1 column 6); "
            "fix the JSON or send text/plain",
        ),
        (
            None,
            'JSON body must be an object or a list, got JSON null; send {"text": "..."} or a '
            "KServe v1/v2 request",
        ),
    ],
    ids=["broken-object", "broken-list", "json-null"],
)
def test_native_route_refuses_broken_json_sent_as_json(body: object, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body, JSON, route="native")
    assert (caught.value.code, caught.value.message) == (400, message)


# -- the cost of one explain request ----------------------------------------------------------

WORK = [
    pytest.param(["a"] * 3, 40, None, id="3x40-at-the-limit"),
    pytest.param(["a"], 100, None, id="1x100"),
    pytest.param(
        ["a"] * 3,
        41,
        "explain request asks for 3 text(s) x 41 steps = 123 text-steps, more than the limit of "
        "120 (max_explain_work); send fewer texts per request or fewer steps (parameters.n_steps)",
        id="3x41-over",
    ),
    pytest.param(
        ["a", "b"],
        None,
        "explain request asks for 2 text(s) x 100 steps = 200 text-steps, more than the limit of "
        "120 (max_explain_work); send fewer texts per request or fewer steps (parameters.n_steps)",
        id="default-steps-count",
    ),
]


@pytest.mark.parametrize(("texts", "n_steps", "message"), WORK)
def test_explain_work_is_capped(texts: list[str], n_steps: int | None, message: str | None) -> None:
    settings = HandlerSettings(
        max_explain_steps=100,
        explain_steps=100 if n_steps is None else 50,
        max_explain_work=120,
        explain_tolerance=0,
    )
    params = {} if n_steps is None else {"n_steps": n_steps}
    raw = RawRow(v2(texts, parameters=params), JSON, True, "kserve")
    if message is None:
        assert parse_request(raw, settings, LABELS).texts == tuple(texts)
        return
    with pytest.raises(RequestError) as caught:
        parse_request(raw, settings, LABELS)
    assert (caught.value.code, caught.value.message) == (413, message)
    predict = RawRow(raw.body, JSON, False, "kserve")
    assert parse_request(predict, settings, LABELS).texts == tuple(texts)


@pytest.mark.parametrize(
    ("texts", "n_steps", "allowed"),
    [(16, 50, True), (16, 500, False), (2, 500, True)],
    ids=["16x50", "16x500", "2x500"],
)
def test_default_explain_work_cap(texts: int, n_steps: int, allowed: bool) -> None:
    raw = RawRow(v2(["a"] * texts, parameters={"n_steps": n_steps}), JSON, True, "kserve")
    try:
        parse_request(raw, HandlerSettings(), LABELS)
    except RequestError as err:
        assert (allowed, err.code) == (False, 413), err.message
    else:
        assert allowed


# -- texts that look like JSON, and the blog's {"text", "target"} form ------------------------

LITERAL = [
    pytest.param('{"text": "quantum", "note": "x"}', id="extra-key"),
    pytest.param('{"text": 5}', id="text-not-a-string"),
    pytest.param('{"texts": ["a"]}', id="texts-key"),
    pytest.param('{"target": 1}', id="target-only"),
    pytest.param("{}", id="empty-object"),
    pytest.param('{"text": "a"', id="broken-json"),
    pytest.param('[{"text": "a"}]', id="json-list"),
    pytest.param('  {"TEXT": "a"}', id="other-case"),
]


@pytest.mark.parametrize("text", LITERAL)
@pytest.mark.parametrize("wrap", ["v2", "v1", "native"])
def test_a_json_looking_text_that_is_not_the_blog_form_is_kept_literally(
    text: str, wrap: str
) -> None:
    body = {"v2": v2([text]), "v1": {"instances": [text]}, "native": {"texts": [text]}}[wrap]
    request = parse(body)
    assert request.texts == (text,)
    assert request.target(0) is None


BLOG_FORM = [
    pytest.param('{"text": "a b"}', None, None, id="text-only"),
    pytest.param('{"text": "a b", "target": 0}', None, 0, id="target-index"),
    pytest.param('{"target": "physics", "text": "a b"}', None, 2, id="target-label"),
    pytest.param('{"text": "a b", "target": null}', 1, 1, id="null-target-takes-parameters"),
    pytest.param('{"text": "a b"}', "chemistry", 1, id="parameters-target"),
    pytest.param('{"text": "a b", "target": 2}', 2, 2, id="same-as-parameters"),
    pytest.param('{"text": "a b", "target": 2}', "physics", 2, id="same-by-name"),
]


@pytest.mark.parametrize(("item", "parameters_target", "expected"), BLOG_FORM)
def test_the_blog_form_gives_its_text_and_target(
    item: str, parameters_target: object, expected: int | None
) -> None:
    params = {} if parameters_target is None else {"target": parameters_target}
    for as_object in (False, True):
        data = json.loads(item) if as_object else item
        request = parse(v2([data], parameters=params), explain=True)
        assert (request.texts, request.target(0)) == (("a b",), expected)


def test_each_text_keeps_its_own_target() -> None:
    body = {"instances": ['{"text": "a", "target": 0}', "b", {"text": "c", "target": "physics"}]}
    request = parse(body)
    assert request.texts == ("a", "b", "c")
    assert [request.target(i) for i in range(3)] == [0, None, 2]
    native = parse({"text": "solo", "target": "chemistry"}, explain=True)
    assert (native.texts, native.target(0)) == (("solo",), 1)


TEXT_TARGET_BAD = [
    pytest.param(
        v2('{"text": "a", "target": 99}'),
        "input 'text' data[0]: target index 99 is out of range; the model has labels 0..2",
        id="index-out-of-range",
    ),
    pytest.param(
        {"instances": [{"text": "a", "target": "geology"}]},
        "instances[0]: unknown target label 'geology'; labels: biology, chemistry, physics",
        id="unknown-label",
    ),
    pytest.param(
        {"texts": ['{"text": "a", "target": [1]}']},
        "texts[0]: target must be a label name or index, got [1]",
        id="not-a-label",
    ),
    pytest.param(
        {"texts": ['{"text": "a", "target": true}']},
        "texts[0]: target must be a label name or index, got True",
        id="boolean",
    ),
    pytest.param(
        v2('{"text": "a", "target": 0}', parameters={"target": "physics"}),
        "text 0 names target 'biology' but parameters.target is 'physics'; send one of them, "
        "or the same",
        id="conflicts-with-parameters",
    ),
    pytest.param(
        {"instances": [{"text": "a", "note": "x"}]},
        'instances[0] has unknown key(s) note; a text object holds "text" and optionally "target"',
        id="object-with-other-keys",
    ),
]


@pytest.mark.parametrize(("body", "message"), TEXT_TARGET_BAD)
def test_a_text_target_is_checked_like_parameters_target(body: object, message: str) -> None:
    for explain in (True, False):
        with pytest.raises(RequestError) as caught:
            parse(body, explain=explain)
        assert (caught.value.code, caught.value.message) == (400, message)


# -- bodies Python's json module cannot read, compressed bodies -------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b"1" * 5_000
TOO_DEEP = (
    "nests JSON arrays/objects too deeply to read (over about 1000 levels); send flatter JSON "
    "with ordinary numbers"
)
TOO_LONG = (
    "holds a JSON number too long to read (over 4300 digits); send flatter JSON with ordinary "
    "numbers"
)
TEXT_FIX = 'send the text without the JSON around it, or as {"text": "...", "target": ...}'
UNREADABLE = [
    pytest.param(bytearray(DEEP), JSON, None, f"request body {TOO_DEEP}", id="deep-body"),
    pytest.param(bytearray(DEEP), JSON, "kserve", f"request body {TOO_DEEP}", id="deep-kserve"),
    pytest.param(
        bytearray(b'{"inputs": ' + HUGE_INT + b"}"),
        JSON,
        "kserve",
        f"request body {TOO_LONG}",
        id="huge-int-kserve",
    ),
    pytest.param(
        bytearray(b'{"texts": ["a"], "parameters": {"n_steps": ' + HUGE_INT + b"}}"),
        JSON,
        "native",
        f"request body {TOO_LONG}",
        id="huge-int-native",
    ),
    pytest.param(
        v2("{" + '"text": ' + "[" * 100_000),
        JSON,
        "kserve",
        "input 'text' data[0] starts with '{' but nests JSON arrays/objects too deeply to read "
        f"(over about 1000 levels); {TEXT_FIX}",
        id="deep-text",
    ),
    pytest.param(
        {"texts": ['{"text": "a", "target": ' + "9" * 5000 + "}"]},
        JSON,
        "native",
        "texts[0] starts with '{' but holds a JSON number too long to read (over 4300 digits); "
        f"{TEXT_FIX}",
        id="huge-int-text",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "route", "message"), UNREADABLE)
def test_json_python_cannot_read_is_a_400(
    body: object, content_type: str, route: Route | None, message: str
) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body, content_type, route=route)
    assert (caught.value.code, caught.value.message) == (400, message)


def test_deep_brackets_sent_as_plain_text_to_a_native_route_are_text() -> None:
    """The native routes read non-JSON content types leniently: brackets are text there."""
    text = "[" * 2000 + "cells" + "]" * 2000
    raw = RawRow(bytearray(text.encode()), "text/plain", False, "native")
    assert parse_request(raw, HandlerSettings(), LABELS).texts == (text,)


GZIPPED = [
    pytest.param(None, None, id="magic-bytes-no-content-type"),
    pytest.param(JSON, None, id="magic-bytes-json"),
    pytest.param("text/plain", "kserve", id="magic-bytes-kserve"),
]
GZIP_MESSAGE = (
    "request body is gzip-compressed (it starts with the gzip magic bytes 1f 8b); "
    "Content-Encoding is not supported: send uncompressed JSON"
)


@pytest.mark.parametrize(("content_type", "route"), GZIPPED)
def test_a_gzip_body_is_refused_as_compressed(
    content_type: str | None, route: Route | None
) -> None:
    body = bytearray(gzip.compress(json.dumps(v2(["a"])).encode()))
    with pytest.raises(RequestError) as caught:
        parse(body, content_type, route=route)
    assert (caught.value.code, caught.value.message) == (400, GZIP_MESSAGE)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP, identity"])
def test_a_content_encoding_header_is_refused(encoding: str) -> None:
    raw = RawRow(v2(["a"]), JSON, False, "kserve", content_encoding=encoding)
    with pytest.raises(RequestError) as caught:
        parse_request(raw, SETTINGS, LABELS)
    assert caught.value.message == (
        f"request body is compressed (Content-Encoding: {encoding}); Content-Encoding is not "
        "supported: send uncompressed JSON without that header"
    )
    plain = RawRow(v2(["a"]), JSON, False, "kserve", content_encoding="identity")
    assert parse_request(plain, SETTINGS, LABELS).texts == ("a",)


# -- messages never carry raw request content -------------------------------------------------

HOSTILE = [
    "é",
    "médecine",
    "a\r\nb",
    "\r\n\r\nHTTP/1.1 200 OK",
    "\udc80",
    "\x00\x1b[31m",
    "\u2028\u2029",
    "🧬" * 50,
    "k" * 3_000_000,
    "x\ty\x7f",
    '"quoted"',
]


def _hostile_bodies(h: str) -> list[tuple[object, Route | None]]:
    """`h` wherever a request can put a string that a message might quote."""
    tensor = {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"]}
    return [
        ({h: 1}, None),
        ({h: 1}, "kserve"),
        ({"inputs": [{**tensor, "name": h, "datatype": "FP32"}]}, "kserve"),
        ({"inputs": [{**tensor, "datatype": h}]}, "kserve"),
        ({"inputs": [{**tensor, "name": h, "shape": [h]}]}, "kserve"),
        ({"inputs": [{**tensor, "name": h, "shape": [7]}]}, "kserve"),
        ({"inputs": [{**tensor, "name": h, "data": [5]}]}, "kserve"),
        ({"inputs": [tensor], "parameters": {"target": h}}, "kserve"),
        ({"inputs": [tensor], "parameters": {"n_steps": h}}, "kserve"),
        ({"inputs": [tensor], "parameters": {"internal_batch_size": [h]}}, "kserve"),
        ({"inputs": [tensor], "parameters": {"merge_subwords": h}}, "kserve"),
        ({"instances": [{"text": "a", h: 1}]}, "kserve"),
        ({"instances": [json.dumps({"text": "a", "target": h})]}, "kserve"),
        ({"texts": [{"text": "a", "target": {h: h}}]}, "native"),
        (MissingBody((h, "b")), "native"),
        ({"text": h}, "native"),
        ({"texts": [h, ""]}, "native"),
    ]


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: ascii(h)[:16])
def test_error_messages_quote_request_content_short_and_escaped(hostile: str) -> None:
    refused = 0
    for body, route in _hostile_bodies(hostile):
        try:
            parse_request(RawRow(body, JSON, True, route), SETTINGS, LABELS)
        except RequestError as err:
            refused += 1
            message = err.message
            assert message.isascii() and message.isprintable(), ascii(message)[:200]
            assert len(message) < 400, message[:400]
    assert refused >= len(_hostile_bodies(hostile)) - 1


# Characters a request can carry that a status line or a log line cannot: non-ASCII letters,
# CR/LF and other controls, lone surrogates, line and paragraph separators, emoji, quotes.
_ALPHABET = "a Z0\r\n\t\x00\x1b\x7f\x85é€\u2028\u2029\u200b\ufeff\udc80\ud800🧬\"'\\{}[]:,"


def _random_hostile(seed: int) -> str:
    rng = random.Random(seed)
    length = rng.choice([1, 3, 17, 64, 500, 20_000])
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


@pytest.mark.parametrize("seed", range(40))
def test_random_hostile_strings_never_reach_a_message_raw(seed: int) -> None:
    """The table above, with strings drawn (seeded) from the characters that break a status line."""
    hostile = _random_hostile(seed)
    for body, route in _hostile_bodies(hostile):
        try:
            parse_request(RawRow(body, JSON, True, route), SETTINGS, LABELS)
        except RequestError as err:
            assert err.message.isascii() and err.message.isprintable(), ascii(err.message)[:200]
            assert len(err.message) < 400
            assert reason_phrase(err.code) in ("Bad Request", "Payload Too Large")


def test_every_status_has_a_short_ascii_reason_phrase() -> None:
    for status in range(100, 600):
        phrase = reason_phrase(status)
        assert phrase.isascii() and phrase.isprintable() and 0 < len(phrase) <= 40, status
    assert [reason_phrase(s) for s in (400, 413, 500, 503)] == [
        "Bad Request",
        "Payload Too Large",
        "Internal Server Error",
        "Service Unavailable",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "'plain'"),
        ("é\r\n", "'\\xe9\\r\\n'"),
        ("\udc80", "'\\udc80'"),
        ("k" * 1000, "'kkkkkkkkkkkkkkkkk...kkkkkkkkkkkkkkkkkk'"),
        ([[[[["deep"]]]]], "[[[...]]]"),
        (10**100, "100000000000000000...0000000000000000000"),
        (None, "None"),
    ],
    ids=["plain", "non-ascii-crlf", "surrogate", "long", "nested", "big-int", "none"],
)
def test_shown(value: object, expected: str) -> None:
    assert shown(value) == expected
