"""Parse one TorchServe batch row into a typed `Request` (KServe v2, KServe v1 or native).

TorchServe (no service_envelope) hands the handler one row per HTTP request: a JSON body is
already decoded under row["body"] (dict, list, str, int ...), text/plain arrives as str, anything
else (octet-stream, invalid JSON, invalid UTF-8) as bytes/bytearray under row["body"] or
row["data"]. The route is not visible, so the body's shape picks the protocol and the `explain`
request header picks the action.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .settings import HandlerSettings

Protocol = Literal["v2", "v1", "native"]
Action = Literal["predict", "explain"]

V2_TEXT_DATATYPE = "BYTES"


class RequestError(Exception):
    """A request the handler refuses: the client gets `code` and `message` as JSON."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)


@dataclass(frozen=True)
class ExplainOptions:
    """Per-request explanation knobs; `target` is a label index, None = the predicted class."""

    target: int | None
    n_steps: int
    internal_batch_size: int
    merge_subwords: bool


@dataclass(frozen=True)
class Request:
    protocol: Protocol
    action: Action
    texts: tuple[str, ...]
    options: ExplainOptions
    # v2 echoes the client's id; None when the client sent none.
    request_id: str | None = None
    # native: a single text (plain body or {"text": ...}) is answered with one object, not a list.
    single: bool = False


@dataclass(frozen=True)
class RawRow:
    """What the parser needs from one batch row and its request headers."""

    body: object
    content_type: str | None
    explain: bool


@dataclass(frozen=True)
class _Body:
    protocol: Protocol
    texts: list[object]
    single: bool = False
    params: object = None
    request_id: str | None = None


def parse_request(raw: RawRow, settings: HandlerSettings, labels: Sequence[str]) -> Request:
    """The typed request of one row, or RequestError naming what is wrong."""
    action: Action = "explain" if raw.explain else "predict"
    body = _classify(_decode_body(raw.body, raw.content_type))
    texts = _check_texts(body.texts, settings, action)
    options = _parse_options(body.params, settings, labels)
    return Request(body.protocol, action, texts, options, body.request_id, body.single)


def _classify(payload: object) -> _Body:
    if isinstance(payload, str):
        return _Body("native", [payload], single=True)
    if isinstance(payload, list):
        return _Body("native", _text_list(payload, "body"))
    if isinstance(payload, dict):
        return _classify_object(payload)
    raise bad_request(
        f"JSON body must be an object or a list, got {type(payload).__name__}; "
        'send {"text": "..."} or a KServe v1/v2 request'
    )


def _decode_body(body: object, content_type: str | None) -> object:
    if body is None:
        raise bad_request(
            "request has no body; send text (Content-Type: text/plain) or JSON "
            "(Content-Type: application/json)"
        )
    if not isinstance(body, (bytes, bytearray)):
        return body
    if not body:
        raise bad_request(
            "request body is empty; POST text (Content-Type: text/plain) or a JSON request "
            "(Content-Type: application/json) to this route"
        )
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "send UTF-8 encoded text"
        ) from None
    is_json = content_type is not None and "json" in content_type.lower()
    if is_json or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if is_json:
                raise bad_request(
                    f"request body is not valid JSON ({exc.msg} at line {exc.lineno} "
                    f"column {exc.colno}); fix the JSON or send text/plain"
                ) from None
    return text


def _classify_object(payload: dict[str, Any]) -> _Body:
    params = payload.get("parameters")
    if "inputs" in payload:
        return _Body("v2", _v2_texts(payload["inputs"]), params=params, request_id=_v2_id(payload))
    if "instances" in payload:
        return _Body("v1", _text_list(payload["instances"], "instances"), params=params)
    if "texts" in payload:
        return _Body("native", _text_list(payload["texts"], "texts"), params=params)
    if "text" in payload:
        return _Body("native", [_text_field(payload, "body")], single=True, params=params)
    keys = ", ".join(sorted(payload)) or "none"
    raise bad_request(
        f"JSON object has none of the keys inputs (KServe v2), instances (KServe v1), text, "
        f'texts (got keys: {keys}); send e.g. {{"text": "..."}}'
    )


def _text_list(items: object, where: str) -> list[object]:
    if not isinstance(items, list):
        raise bad_request(f"{where} must be a list of texts, got {type(items).__name__}")
    return [_text_item(item, f"{where}[{i}]") for i, item in enumerate(items)]


def _v2_id(payload: Mapping[str, Any]) -> str | None:
    request_id = payload.get("id")
    if request_id is None:
        return None
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        raise bad_request(f"id must be a string, got {type(request_id).__name__}")
    return str(request_id)


def _v2_texts(inputs: object) -> list[object]:
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("inputs must be a non-empty list of BYTES tensors")
    texts: list[object] = []
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise bad_request(f"inputs[{i}] must be an object, got {type(tensor).__name__}")
        name = tensor.get("name", f"inputs[{i}]")
        datatype = tensor.get("datatype")
        if datatype != V2_TEXT_DATATYPE:
            raise bad_request(
                f"input {name!r} has datatype {datatype!r}; this model takes text: "
                f"send datatype {V2_TEXT_DATATYPE!r}"
            )
        data = tensor.get("data")
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list):
            raise bad_request(
                f"input {name!r} data must be a list of strings or a string, "
                f"got {type(data).__name__}"
            )
        _check_shape(name, tensor.get("shape"), len(items))
        texts.extend(_text_item(item, f"input {name!r} data[{j}]") for j, item in enumerate(items))
    return texts


def _check_shape(name: object, shape: object, count: int) -> None:
    """-1 (the blog's form) or absent means "any"; otherwise the sizes must multiply to count."""
    if shape is None or shape == -1:
        return
    dims = [shape] if isinstance(shape, int) else shape
    valid = isinstance(dims, list) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    )
    if not valid:
        raise bad_request(f"input {name!r} shape must be a list of integers, got {shape!r}")
    assert isinstance(dims, list)
    known = [d for d in dims if d != -1]
    if any(d < 0 for d in known):
        raise bad_request(f"input {name!r} shape {shape!r} has a negative size")
    size = math.prod(known)
    fits = size == count if len(known) == len(dims) else (size > 0 and count % size == 0)
    if not fits:
        raise bad_request(f"input {name!r} shape {shape!r} disagrees with {count} data item(s)")


def _text_item(item: object, where: str) -> object:
    """A text: plain, a JSON string holding {"text": ...}, or a {"text": ...} object."""
    if isinstance(item, str):
        stripped = item.lstrip()
        if stripped.startswith("{"):
            try:
                decoded = json.loads(item)
            except json.JSONDecodeError:
                return item
            if isinstance(decoded, dict) and "text" in decoded:
                return _text_field(decoded, where)
        return item
    if isinstance(item, dict):
        return _text_field(item, where)
    raise bad_request(
        f'{where} must be a string or an object with a "text" string, got {type(item).__name__}'
    )


def _text_field(obj: Mapping[str, Any], where: str) -> object:
    text = obj.get("text")
    if not isinstance(text, str):
        raise bad_request(f'{where} "text" must be a string, got {type(text).__name__}')
    return text


def _check_texts(
    texts: Sequence[object], settings: HandlerSettings, action: Action
) -> tuple[str, ...]:
    if not texts:
        raise bad_request("request holds no text; send at least one")
    limit = settings.max_texts_per_request
    if len(texts) > limit:
        raise RequestError(
            413,
            f"request holds {len(texts)} texts, more than the limit of {limit} "
            "(max_texts_per_request); split it",
        )
    if action == "explain" and len(texts) > settings.max_explain_texts:
        raise RequestError(
            413,
            f"explain request holds {len(texts)} texts, more than the limit of "
            f"{settings.max_explain_texts} (max_explain_texts); split it, or ask the infer route "
            "for predictions only",
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):  # pragma: no cover - _text_item guarantees str
            raise bad_request(f"text {i} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise bad_request(f"text {i} is empty or whitespace; send some words")
        if len(text) > settings.max_text_chars:
            raise RequestError(
                413,
                f"text {i} has {len(text)} characters, more than the limit of "
                f"{settings.max_text_chars} (max_text_chars); shorten it",
            )
        _check_characters(i, text)
    return tuple(str(t) for t in texts)


def _check_characters(i: int, text: str) -> None:
    # A JSON "\udc80" escape decodes to a lone surrogate, which no tokenizer can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise bad_request(
            f"text {i} holds an unpaired surrogate {text[exc.start]!r} at character {exc.start}; "
            "send valid Unicode text"
        ) from None
    if not any(ch.isprintable() and not ch.isspace() for ch in text):
        raise bad_request(
            f"text {i} has no printable characters (only control or format characters); "
            "send some words"
        )


def _parse_options(
    params: object, settings: HandlerSettings, labels: Sequence[str]
) -> ExplainOptions:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise bad_request(f"parameters must be an object, got {type(params).__name__}")
    cap = settings.max_explain_steps
    return ExplainOptions(
        target=_target(params.get("target"), labels),
        n_steps=_int_param(params, "n_steps", settings.explain_steps, cap),
        internal_batch_size=_int_param(
            params, "internal_batch_size", settings.internal_batch_size, 4096
        ),
        merge_subwords=_bool_param(params, "merge_subwords", settings.merge_subwords),
    )


def _target(value: object, labels: Sequence[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(f"target must be a label name or index, got {value!r}")
    if isinstance(value, int):
        if not 0 <= value < len(labels):
            raise bad_request(
                f"target index {value} is out of range; the model has labels 0..{len(labels) - 1}"
            )
        return value
    if value in labels:
        return list(labels).index(value)
    raise bad_request(f"unknown target label {value!r}; labels: {', '.join(labels)}")


def _int_param(params: Mapping[str, Any], key: str, default: int, cap: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key} must be an integer, got {value!r}")
    if not 1 <= value <= cap:
        raise bad_request(f"{key} must be between 1 and {cap}, got {value}")
    return value


def _bool_param(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false, got {value!r}")
    return value
