"""Parse one TorchServe batch row into a typed `Request` (KServe v2, KServe v1 or native).

TorchServe (no service_envelope) hands the handler one row per HTTP request: a JSON body is
already decoded under row["body"] (dict, list, str, int, None ...), text/plain arrives as str,
anything else (octet-stream, invalid JSON, invalid UTF-8) as bytes/bytearray under row["body"] or
row["data"]; a form-encoded request has no body, only its fields. The `explain` request header
picks the action. The route shows only through the headers TorchServe adds (`request_route`):
on the KServe routes the body must be a JSON object holding `inputs` (v2) or `instances` (v1),
whatever its Content-Type; the native routes take plain text or JSON; when the route is unknown
the body's shape picks the protocol.
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
# "kserve": /v2/models/NAME/infer|explain or /v1/models/NAME:predict|:explain (TorchServe tells
# the worker nothing that separates v1 from v2); "native": /predictions, /explanations.
Route = Literal["kserve", "native"]

V2_TEXT_DATATYPE = "BYTES"
KSERVE_SHAPE = '{"inputs": [...]} (KServe v2) or {"instances": [...]} (KServe v1)'
# What TorchServe decodes itself (its worker compares the part's exact mime type).
SERVER_DECODED_JSON = "application/json"


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
class MissingBody:
    """A row without a body: TorchServe split a form-encoded request into `fields`."""

    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class RawRow:
    """What the parser needs from one batch row and its request headers."""

    # The body as TorchServe decoded it (None is a JSON null), or MissingBody.
    body: object
    content_type: str | None
    explain: bool
    # The kind of route the request came in on; None when unknown (the body's shape decides).
    route: Route | None = None


def request_route(url_path: object, explain_header: object) -> Route | None:
    """The kind of route of a request, from the headers TorchServe 0.12 adds to it.

    /predictions and /explanations get `url_path` ('' or '/...') and `explain`; the KServe v1 and
    v2 routes get `explain` only; other routes (/invocations) get neither. A client can send a
    `url_path` header of its own on a KServe route: it then only gets the lenient native parsing.
    """
    if url_path is not None:
        return "native"
    if explain_header is not None:
        return "kserve"
    return None


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
    if raw.route == "kserve":
        body = _classify_kserve(_kserve_payload(raw))
    else:
        body = _classify(_decode_body(raw.body, raw.content_type))
    texts = _check_texts(body.texts, settings, action)
    options = _parse_options(body.params, settings, labels)
    if action == "explain":
        _check_explain_work(len(texts), options.n_steps, settings)
    return Request(body.protocol, action, texts, options, body.request_id, body.single)


# -- KServe routes: a JSON object, whatever the Content-Type ----------------------------------


def _kserve_payload(raw: RawRow) -> dict[str, Any]:
    body = raw.body
    if isinstance(body, MissingBody):
        raise _no_body(body, f"send a JSON object, {KSERVE_SHAPE}")
    if isinstance(body, (bytes, bytearray)):
        return _json_object(_parse_json(_utf8(body, f"POST a JSON object, {KSERVE_SHAPE}")))
    if isinstance(body, str) and _mime(raw.content_type) != SERVER_DECODED_JSON:
        # text/plain: TorchServe decoded the UTF-8 only. (With application/json, a str body is
        # a JSON string TorchServe decoded.)
        return _json_object(_parse_json(body))
    return _json_object(body)


def _parse_json(text: str) -> object:
    if not text.strip():
        raise bad_request(
            f"request body is empty or whitespace; POST a JSON object, {KSERVE_SHAPE}"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); send a JSON object, {KSERVE_SHAPE}"
        ) from None


def _json_object(value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise bad_request(
        f"request body is {_json_type(value)}, not a JSON object; send a JSON object, "
        f"{KSERVE_SHAPE}"
    )


def _classify_kserve(payload: dict[str, Any]) -> _Body:
    body = _classify_kserve_keys(payload)
    if body is not None:
        return body
    raise bad_request(
        f"JSON object has neither inputs (KServe v2) nor instances (KServe v1) "
        f"(got keys: {_keys(payload)}); send {KSERVE_SHAPE}, or send "
        '{"text": "..."} to /predictions/NAME'
    )


def _classify_kserve_keys(payload: dict[str, Any]) -> _Body | None:
    params = payload.get("parameters")
    if "inputs" in payload:
        return _Body("v2", _v2_texts(payload["inputs"]), params=params, request_id=_v2_id(payload))
    if "instances" in payload:
        return _Body("v1", _text_list(payload["instances"], "instances"), params=params)
    return None


# -- native and unknown routes: plain text or JSON --------------------------------------------


def _classify(payload: object) -> _Body:
    if isinstance(payload, str):
        return _Body("native", [payload], single=True)
    if isinstance(payload, list):
        return _Body("native", _text_list(payload, "body"))
    if isinstance(payload, dict):
        return _classify_object(payload)
    raise bad_request(
        f"JSON body must be an object or a list, got {_json_type(payload)}; "
        'send {"text": "..."} or a KServe v1/v2 request'
    )


def _decode_body(body: object, content_type: str | None) -> object:
    if isinstance(body, MissingBody):
        raise _no_body(
            body, "send text (Content-Type: text/plain) or JSON (Content-Type: application/json)"
        )
    if not isinstance(body, (bytes, bytearray)):
        return body
    text = _utf8(
        body,
        "POST text (Content-Type: text/plain) or a JSON request "
        "(Content-Type: application/json) to this route",
    )
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
    kserve = _classify_kserve_keys(payload)
    if kserve is not None:
        return kserve
    if "texts" in payload:
        return _Body("native", _text_list(payload["texts"], "texts"), params=params)
    if "text" in payload:
        return _Body("native", [_text_field(payload, "body")], single=True, params=params)
    raise bad_request(
        f"JSON object has none of the keys inputs (KServe v2), instances (KServe v1), text, "
        f'texts (got keys: {_keys(payload)}); send e.g. {{"text": "..."}}'
    )


# -- shared body helpers ----------------------------------------------------------------------


def _utf8(body: bytes | bytearray, expected: str) -> str:
    """Raw body bytes as text; `expected` says what to send instead of an empty body."""
    if not body:
        raise bad_request(f"request body is empty; {expected}")
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "send UTF-8 encoded text"
        ) from None


def _no_body(body: MissingBody, expected: str) -> RequestError:
    form = f" (TorchServe read it as form fields: {', '.join(body.fields)})" if body.fields else ""
    return bad_request(f"request has no body{form}; {expected}")


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _keys(payload: Mapping[str, Any]) -> str:
    return ", ".join(sorted(payload)) or "none"


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type: object, array, string, number, boolean, null."""
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, list):
        return "a JSON array"
    return f"a {type(value).__name__}"


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


def _check_explain_work(texts: int, n_steps: int, settings: HandlerSettings) -> None:
    work = texts * n_steps
    limit = settings.max_explain_work
    if work > limit:
        raise RequestError(
            413,
            f"explain request asks for {texts} text(s) x {n_steps} steps = {work} text-steps, "
            f"more than the limit of {limit} (max_explain_work); send fewer texts per request "
            "or fewer steps (parameters.n_steps)",
        )


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
        merge_subwords=_words_wanted(params, settings.merge_subwords),
    )


def _words_wanted(params: Mapping[str, Any], default: bool) -> bool:
    """parameters.granularity "words" (the text's words) or "pieces" (the tokenizer's);
    merge_subwords true/false is the older spelling of the same choice."""
    words = _bool_param(params, "merge_subwords", default)
    if "granularity" not in params:
        return words
    value: object = params["granularity"]
    if value not in ("words", "pieces"):
        raise bad_request(f'granularity must be "words" or "pieces", got {value!r}')
    if "merge_subwords" in params and words != (value == "words"):
        raise bad_request(
            f"granularity {value!r} contradicts merge_subwords {words!r}; send granularity only"
        )
    return value == "words"


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
