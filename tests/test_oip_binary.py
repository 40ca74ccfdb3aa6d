"""The Open Inference Protocol binary extension codec and TorchServe gRPC bodies, as tables."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

import pytest

from scibert_pack.handlers import oip_binary, oip_grpc
from scibert_pack.handlers.oip_binary import OipError, OutputSpec, encode_elements
from scibert_pack.handlers.oip_reply import grpc_replies
from scibert_pack.handlers.protocol import RawRow, RequestError, parse_request
from scibert_pack.handlers.settings import HandlerSettings

LABELS = ("biology", "chemistry", "physics")
SETTINGS = HandlerSettings()


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def text_input(blob: bytes, count: int, name: str = "text") -> dict[str, Any]:
    return {
        "name": name,
        "shape": [count],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }


@dataclass(frozen=True)
class Good:
    id: str
    texts: tuple[str, ...]


GOOD = [
    Good("one-ascii", ("cells divide",)),
    Good("several", ("cells divide", "the acid reacts", "photons")),
    Good("non-ascii", ("médecine ∂x/∂t 電子",)),
    Good("empty-element", ("",)),
    Good("newlines", ("line one\r\nline two",)),
]


@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.id)
def test_binary_bytes_input_decodes_to_its_texts(case: Good) -> None:
    blob = encode_elements(case.texts)
    body, length = binary_body({"inputs": [text_input(blob, len(case.texts))]}, blob)
    decoded = oip_binary.decode_request(body, length)
    assert decoded["inputs"][0]["data"] == list(case.texts)
    assert "parameters" not in decoded["inputs"][0]


def test_binary_and_json_inputs_mix_and_other_parameters_stay() -> None:
    blob = encode_elements(["a", "b"])
    tensor = text_input(blob, 2, "bin")
    tensor["parameters"]["content_type"] = "str"
    json_input = {"name": "plain", "shape": [1], "datatype": "BYTES", "data": ["c"]}
    body, length = binary_body({"inputs": [json_input, tensor]}, blob)
    decoded = oip_binary.decode_request(body, length)
    assert [t["data"] for t in decoded["inputs"]] == [["c"], ["a", "b"]]
    assert decoded["inputs"][1]["parameters"] == {"content_type": "str"}


def _elements(*pairs: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack("<I", n) + raw for n, raw in pairs)


@dataclass(frozen=True)
class Bad:
    id: str
    body: bytes
    length: int
    needle: str


def _bad_size(size: object, blob: bytes = b"") -> tuple[bytes, int]:
    header = {
        "inputs": [
            {
                "name": "text",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    return binary_body(header, blob)


def _bad(id: str, pair: tuple[bytes, int], needle: str) -> Bad:
    return Bad(id, pair[0], pair[1], needle)


ONE = encode_elements(["cells divide"])
BAD = [
    Bad("header-longer-than-body", b'{"inputs": []}', 99, "says 99 bytes but the body has only 14"),
    Bad("header-not-json", b"not json at all", 8, "are not a JSON request"),
    Bad("header-not-utf8", b'{"a": "\xff"}', 10, "not valid UTF-8"),
    Bad("header-an-array", b"[1, 2]", 6, "is a list, not an object"),
    Bad("header-deeply-nested", b"[" * 100_000, 100_000, "nested too deeply"),
    _bad("size-beyond-body", _bad_size(1000, ONE), "announces 1000 bytes"),
    _bad("size-negative", _bad_size(-4, ONE), "binary_data_size is -4"),
    _bad("size-a-string", _bad_size("16", ONE), "binary_data_size is '16'"),
    _bad("size-a-boolean", _bad_size(True, ONE), "binary_data_size is True"),
    _bad("size-absurd", _bad_size(2**62, ONE), f"announces {2**62} bytes"),
    _bad("trailing-bytes", _bad_size(len(ONE), ONE + b"xx"), "2 byte(s) after"),
    _bad("element-length-beyond", _bad_size(8, _elements((1000, b"abcd"))), "says 1000 bytes"),
    _bad("element-length-cut", _bad_size(2, b"\x01\x00"), "cut inside its 4-byte length"),
    _bad("element-not-utf8", _bad_size(6, _elements((2, b"\xff\xfe"))), "element 0 is not valid"),
]


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_malformed_binary_body_is_a_400_naming_the_problem(case: Bad) -> None:
    with pytest.raises(OipError) as info:
        oip_binary.decode_request(case.body, case.length)
    assert info.value.code == 400
    assert case.needle in info.value.message


def test_binary_non_bytes_input_is_refused() -> None:
    blob = struct.pack("<2f", 1.0, 2.0)
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    body, length = binary_body(header, blob)
    with pytest.raises(OipError, match="has datatype 'FP32'; this model takes text"):
        oip_binary.decode_request(body, length)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12", 12), (" 7 ", 7), ("0", 0), ("-1", None), ("1e3", None), ("²", None), ("9" * 13, None)],
    ids=["plain", "spaces", "zero", "negative", "exponent", "superscript", "absurd"],
)
def test_header_length_values(value: str, expected: int | None) -> None:
    headers = {"inference-header-content-length": value}
    if expected is None:
        with pytest.raises(OipError, match="not a byte count"):
            oip_binary.header_length(headers)
    else:
        assert oip_binary.header_length(headers) == expected


# -- outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, None),
        ({"parameters": {"binary_data_output": True}}, OutputSpec(None, frozenset(), True)),
        ({"outputs": [{"name": "label"}]}, OutputSpec(("label",), frozenset(), False)),
        (
            {"outputs": [{"name": "label", "parameters": {"binary_data": True}}]},
            OutputSpec(("label",), frozenset({"label"}), False),
        ),
        (
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
            },
            OutputSpec(("label",), frozenset(), True, frozenset({"label"})),
        ),
    ],
    ids=["nothing", "all-binary", "subset", "one-binary", "binary-but-one"],
)
def test_output_spec(payload: dict[str, Any], expected: OutputSpec | None) -> None:
    assert oip_binary.parse_outputs(payload) == expected


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"outputs": "label"}, "outputs must be a list"),
        ({"outputs": [{"nom": "label"}]}, 'outputs[0] must be an object with a "name"'),
        ({"outputs": [{"name": "label", "parameters": {"binary_data": 1}}]}, "must be true or"),
        ({"parameters": {"binary_data_output": "yes"}}, "binary_data_output must be true"),
    ],
    ids=["not-a-list", "no-name", "flag-not-bool", "default-not-bool"],
)
def test_bad_output_spec(payload: dict[str, Any], needle: str) -> None:
    with pytest.raises(OipError) as info:
        oip_binary.parse_outputs(payload)
    assert needle in info.value.message


def test_unknown_output_names_the_known_ones_and_cuts_the_echo() -> None:
    spec = OutputSpec(("label", "é" * 500), frozenset(), False)
    with pytest.raises(OipError) as info:
        oip_binary.check_outputs(spec, ("label", "probabilities"))
    assert "answers the outputs label, probabilities" in info.value.message
    assert info.value.message.isascii() and len(info.value.message) < 200


# -- replies --------------------------------------------------------------------------------

REPLY = {
    "model_name": "m",
    "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["biology", "médecine"]},
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 1, 0]},
    ],
}


@pytest.mark.parametrize(
    ("spec", "binary_names"),
    [
        (OutputSpec(None, frozenset(), True), {"label", "probabilities"}),
        (OutputSpec(None, frozenset({"label"}), False), {"label"}),
        (OutputSpec(None, frozenset(), True, frozenset({"label"})), {"probabilities"}),
    ],
    ids=["all", "label-only", "all-but-label"],
)
def test_binary_reply_round_trips(spec: OutputSpec, binary_names: set[str]) -> None:
    data, length = oip_binary.encode_reply(REPLY, spec)
    header = json.loads(data[:length])
    offset = length
    for output, original in zip(header["outputs"], REPLY["outputs"], strict=True):
        if output["name"] not in binary_names:
            assert output == original
            continue
        size = output["parameters"]["binary_data_size"]
        chunk = data[offset : offset + size]
        offset += size
        if output["datatype"] == "FP32":
            assert list(struct.unpack(f"<{size // 4}f", chunk)) == original["data"]
        else:
            assert chunk == encode_elements(original["data"])
    assert offset == len(data)


def test_binary_explain_items_are_json_elements() -> None:
    item = {"words": ["a"], "importances": [0.5]}
    assert oip_binary.tensor_bytes("BYTES", [item]) == encode_elements([json.dumps(item)])


def test_requested_outputs_are_selected_in_request_order() -> None:
    spec = OutputSpec(("probabilities", "label"), frozenset(), False)
    names = [o["name"] for o in oip_binary.select_outputs(REPLY, spec)["outputs"]]
    assert names == ["probabilities", "label"]


# -- through parse_request ------------------------------------------------------------------


def _parse(raw: RawRow, explain: bool = False) -> Any:
    return parse_request(raw, SETTINGS, LABELS)


def test_parse_request_reads_a_binary_body_like_its_json_twin() -> None:
    texts = ["cells divide", "the acid reacts"]
    blob = encode_elements(texts)
    body, length = binary_body({"id": "7", "inputs": [text_input(blob, 2)]}, blob)
    binary = _parse(RawRow(bytearray(body), "", False, "kserve", binary_header=str(length)))
    plain = {"id": "7", "inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": texts}]}
    assert binary == _parse(RawRow(plain, "application/json", False, "kserve"))


@pytest.mark.parametrize(
    ("explain", "outputs", "needle"),
    [
        (False, [{"name": "explain"}], "unknown output 'explain'; this route answers the outputs "),
        (True, [{"name": "label"}], "answers the outputs explain:"),
    ],
    ids=["infer-asks-explain", "explain-asks-label"],
)
def test_parse_request_refuses_unknown_outputs(
    explain: bool, outputs: list[dict[str, str]], needle: str
) -> None:
    body = {"inputs": [{"name": "t", "datatype": "BYTES", "data": ["x y"]}], "outputs": outputs}
    with pytest.raises(RequestError) as info:
        parse_request(RawRow(body, "application/json", explain, "kserve"), SETTINGS, LABELS)
    assert info.value.code == 400 and needle in info.value.message


# -- TorchServe's OIP gRPC bodies ------------------------------------------------------------


def grpc_body(*items: bytes) -> dict[str, Any]:
    """The body TorchServe 0.12 builds from a ModelInferRequest (OpenInferenceProtocolImpl)."""
    data = [base64.b64encode(item).decode() for item in items]
    tensor = {"name": "text", "shape": [len(items)], "datatype": "BYTES", "data": data}
    return {"id": "g1", "model_name": "m", "inputs": [tensor]}


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"body": {"content-type": "application/json"}}, grpc_body(b"x"), True),
        ({"body": {}, "Host": "127.0.0.1"}, grpc_body(b"x"), False),
        ({"body": {}}, {"inputs": []}, False),
        ({"body": {}}, "text", False),
    ],
    ids=["grpc", "http-has-headers", "no-model-name", "not-a-dict"],
)
def test_grpc_requests_are_recognised(
    headers: dict[str, Any], body: object, expected: bool
) -> None:
    assert oip_grpc.is_grpc_request(headers, body) is expected


def test_grpc_body_parses_like_rest() -> None:
    texts = ["cells divide", "médecine"]
    grpc = _parse(
        RawRow(grpc_body(*(t.encode() for t in texts)), "application/json", False, None, grpc=True)
    )
    rest = {"id": "g1", "inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": texts}]}
    expected = _parse(RawRow(rest, "application/json", False, "kserve"))
    assert grpc.texts == expected.texts and grpc.request_id == "g1" and grpc.grpc


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {
                **grpc_body(),
                "inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": []}],
            },
            "drops raw_input_contents",
        ),
        (grpc_body(b"\xff\xfe"), "bytes_contents[0] is not valid UTF-8"),
        (
            {
                **grpc_body(),
                "inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["%%"]}],
            },
            "bytes_contents[0] is not valid UTF-8",
        ),
    ],
    ids=["raw-input-contents", "not-utf8", "not-base64"],
)
def test_bad_grpc_bodies(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(RequestError) as info:
        _parse(RawRow(body, "application/json", False, None, grpc=True))
    assert info.value.code == 400 and needle in info.value.message


def test_grpc_error_body_has_what_the_frontend_reads() -> None:
    body = oip_grpc.error_body(grpc_body(b"x"), "m", "1.0", 400, "bad")
    assert {"id", "model_name", "model_version", "outputs"} <= set(body)
    assert body["id"] == "g1"
    assert [o["name"] for o in body["outputs"]] == ["error", "error_code"]


@dataclass(frozen=True)
class _Raw:
    body: object
    grpc: bool


@dataclass(frozen=True)
class _Reply:
    status: int
    body: object
    outputs: OutputSpec | None = None


@dataclass(frozen=True)
class _Info:
    name: str = "m"
    version: str = "1.0"


def test_a_lone_failed_grpc_request_raises_what_torchserve_turns_into_a_grpc_status() -> None:
    from ts.utils.util import PredictionException

    raws = [_Raw(grpc_body(b" "), True)]
    with pytest.raises(PredictionException) as info:
        grpc_replies(raws, [_Reply(413, {"error": "too big", "code": 413})], _Info())
    assert (info.value.message, info.value.error_code) == ("too big", 413)


def test_a_failed_grpc_request_in_a_batch_gets_error_outputs_and_the_others_stay() -> None:
    raws = [_Raw(grpc_body(b" "), True), _Raw(grpc_body(b"x"), True), _Raw({}, False)]
    replies = [
        _Reply(400, {"error": "text 0 is empty", "code": 400}),
        _Reply(200, {"outputs": []}),
        _Reply(400, {"error": "rest", "code": 400}),
    ]
    out = grpc_replies(raws, replies, _Info())
    assert out[1:] == replies[1:]
    assert out[0].body == oip_grpc.error_body(raws[0].body, "m", "1.0", 400, "text 0 is empty")
