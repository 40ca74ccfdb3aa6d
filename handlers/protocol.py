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
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from . import oip_binary, oip_grpc
from .oip_binary import OipError, OutputSpec
from .settings import LADDER_START, TOLERANCE_RANGE, HandlerSettings, tolerance_problem

Protocol = Literal["v2", "v1", "native"]
Action = Literal["predict", "explain"]
# "kserve": /v2/models/NAME/infer|explain or /v1/models/NAME:predict|:explain (TorchServe tells
# the worker nothing that separates v1 from v2); "native": /predictions, /explanations.
Route = Literal["kserve", "native"]

V2_TEXT_DATATYPE = "BYTES"
KSERVE_SHAPE = '{"inputs": [...]} (KServe v2) or {"instances": [...]} (KServe v1)'
# `curl -d` without this header sends a form, which TorchServe splits into fields: no body is left.
JSON_HINT = "with the header Content-Type: application/json"
# What TorchServe decodes itself (its worker compares the part's exact mime type).
SERVER_DECODED_JSON = "application/json"
GZIP_MAGIC = b"\x1f\x8b"
# The keys of the blog's JSON text form, {"text": "...", "target": ...}.
TEXT_FORM_KEYS = frozenset({"text", "target"})


@dataclass(frozen=True)
class Limit:
    """A handler setting a request went over: its name, its value, and the request's value."""

    name: str
    limit: int
    value: int


class RequestError(Exception):
    """A request the handler refuses: the client gets `code` and `message` as JSON.

    The message goes into the JSON body only, never into the HTTP status line (see
    render.reason_phrase): it may quote request content, always through `shown`. A request over
    a handler setting's limit also names the setting, its limit and the request's value, so that
    clients read them from the body instead of parsing the message.
    """

    def __init__(self, code: int, message: str, *, limit: Limit | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.limit = limit


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)


# How much of a request value a message quotes: enough to recognise it, never a flood (a 3 MB
# key) and never raw CR/LF, non-ASCII or lone surrogates (escaped).
SHOWN_CHARS = 40
_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = SHOWN_CHARS
_REPR.maxother = SHOWN_CHARS
_REPR.maxlong = SHOWN_CHARS
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 4


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` as a message may quote it: repr-like, plain ASCII, at most about `limit` chars."""
    try:
        text = _REPR.repr(value)
    except (RecursionError, ValueError):  # absurdly nested, or an int too long to print
        text = f"<{type(value).__name__}>"
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bare(key: object) -> str:
    """A key as written when it is short plain ASCII, else quoted by `shown`."""
    if isinstance(key, str) and 0 < len(key) <= SHOWN_CHARS and key.isascii() and key.isprintable():
        return key
    return shown(key)


@dataclass(frozen=True)
class ExplainOptions:
    """Per-request explanation knobs; `target` is a label index, None = the predicted class."""

    target: int | None
    # Explicit steps, or (tolerance mode) the ladder's first rung.
    n_steps: int
    internal_batch_size: int
    merge_subwords: bool
    # Tolerance mode: the |convergence delta| to reach (None: exactly n_steps), and the most
    # steps each text may take on the way.
    tolerance: float | None = None
    max_steps: int = 0


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
    # v2: the outputs the client asked for, and which of them in binary (None: all, as JSON).
    outputs: OutputSpec | None = None
    # Came through TorchServe's OIP gRPC service (see oip_grpc).
    grpc: bool = False
    # Per text: the label index to explain (its own "target", else parameters.target), None =
    # the predicted class. Empty = options.target for every text.
    targets: tuple[int | None, ...] = ()

    def target(self, i: int) -> int | None:
        return self.targets[i] if self.targets else self.options.target


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
    # The Inference-Header-Content-Length header (binary tensor extension), None when absent.
    binary_header: object = None
    # Came through TorchServe's OIP gRPC service: BYTES data are base64 (see oip_grpc).
    grpc: bool = False
    # The request's Content-Encoding header, if any: no encoding is supported.
    content_encoding: str | None = None


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
class _Text:
    """One text as sent, with the target it names itself (the blog's {"text", "target"} form)."""

    text: object
    target: object = None
    where: str = "body"


@dataclass(frozen=True)
class _Body:
    protocol: Protocol
    texts: list[_Text]
    single: bool = False
    params: object = None
    request_id: str | None = None
    outputs: OutputSpec | None = None


def parse_request(raw: RawRow, settings: HandlerSettings, labels: Sequence[str]) -> Request:
    """The typed request of one row, or RequestError naming what is wrong."""
    action: Action = "explain" if raw.explain else "predict"
    _check_encoding(raw.content_encoding)
    raw = _unpack_oip(raw)
    if raw.route == "kserve":
        body = _classify_kserve(_kserve_payload(raw))
    else:
        body = _classify(_decode_body(raw.body, raw.content_type))
    texts = _check_texts([item.text for item in body.texts], settings, action)
    options = _parse_options(body.params, settings, labels)
    targets = _text_targets(body.texts, options.target, labels)
    if action == "explain":
        _check_explain_work(len(texts), options.n_steps, settings)
    _oip_call(oip_binary.check_outputs, body.outputs, oip_binary.V2_OUTPUTS[action])
    return Request(
        body.protocol,
        action,
        texts,
        options,
        body.request_id,
        body.single,
        targets=targets,
        outputs=body.outputs,
        grpc=raw.grpc,
    )


# -- Open Inference Protocol transports: binary extension, TorchServe's gRPC ------------------


def _unpack_oip(raw: RawRow) -> RawRow:
    """A binary-extension or gRPC request as the plain JSON request it carries."""
    if raw.binary_header is not None:
        length = _oip_call(oip_binary.header_length, {oip_binary.HEADER_LENGTH: raw.binary_header})
        body = raw.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        if isinstance(body, (bytes, bytearray)) and length is not None:
            payload = _oip_call(oip_binary.decode_request, body, length)
            return replace(raw, body=payload, content_type=SERVER_DECODED_JSON)
    if raw.grpc and isinstance(raw.body, dict):
        payload = _oip_call(oip_grpc.decode_request, raw.body)
        return replace(raw, body=payload, route="kserve")
    return raw


def _oip_call(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except OipError as exc:
        raise RequestError(exc.code, exc.message) from None


def _check_encoding(content_encoding: str | None) -> None:
    if content_encoding is None or content_encoding.strip().lower() in ("", "identity"):
        return
    raise bad_request(
        f"request body is compressed (Content-Encoding: {_bare(content_encoding)}); "
        "Content-Encoding is not supported: send uncompressed JSON without that header"
    )


def _text_targets(
    items: Sequence[_Text], default: int | None, labels: Sequence[str]
) -> tuple[int | None, ...]:
    """Each text's target: its own, checked like parameters.target, else that one."""
    targets: list[int | None] = []
    for i, item in enumerate(items):
        own = _target(item.target, labels, item.where)
        if own is not None and default is not None and own != default:
            raise bad_request(
                f"text {i} names target {labels[own]!r} but parameters.target is "
                f"{labels[default]!r}; send one of them, or the same"
            )
        targets.append(default if own is None else own)
    return tuple(targets)


# -- KServe routes: a JSON object, whatever the Content-Type ----------------------------------


def _kserve_payload(raw: RawRow) -> dict[str, Any]:
    body = raw.body
    if isinstance(body, MissingBody):
        raise _no_body(body, f"send a JSON object, {KSERVE_SHAPE}, {JSON_HINT}")
    if isinstance(body, (bytes, bytearray)):
        expected = f"POST a JSON object, {KSERVE_SHAPE}, {JSON_HINT}"
        return _json_object(_parse_json(_utf8(body, expected)))
    if isinstance(body, str) and _mime(raw.content_type) != SERVER_DECODED_JSON:
        # text/plain: TorchServe decoded the UTF-8 only. (With application/json, a str body is
        # a JSON string TorchServe decoded.)
        return _json_object(_parse_json(body))
    return _json_object(body)


def _parse_json(text: str) -> object:
    if not text.strip():
        raise bad_request(
            f"request body is empty or whitespace; POST a JSON object, {KSERVE_SHAPE}, {JSON_HINT}"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}){_quoting_hint(text)}; send a JSON object, {KSERVE_SHAPE}"
        ) from None
    except (RecursionError, ValueError) as exc:
        raise _unreadable_json("request body", exc) from None


# `"data": "{"text": ...}"`: a JSON object written into a string without escaping its quotes,
# as the KServe blog post's explain payload does.
_UNESCAPED_OBJECT = re.compile(r':\s*"\{\s*"')


def _quoting_hint(text: str) -> str:
    if _UNESCAPED_OBJECT.search(text[:100_000]) is None:
        return ""
    return (
        ': a JSON object inside a string value must escape its quotes, as in "data": '
        '"{\\"text\\": \\"...\\"}" (the KServe blog post\'s payload has none)'
    )


def _unreadable_json(
    what: str, exc: BaseException, fix: str = "send flatter JSON with ordinary numbers"
) -> RequestError:
    """Valid-looking JSON that Python's json module cannot read: too deep, or a huge integer."""
    if isinstance(exc, RecursionError):
        problem = "nests JSON arrays/objects too deeply to read (over about 1000 levels)"
    else:
        problem = "holds a JSON number too long to read (over 4300 digits)"
    return bad_request(f"{what} {problem}; {fix}")


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
        outputs = _oip_call(oip_binary.parse_outputs, payload)
        texts = _v2_texts(payload["inputs"])
        return _Body("v2", texts, params=params, request_id=_v2_id(payload), outputs=outputs)
    if "instances" in payload:
        return _Body("v1", _text_list(payload["instances"], "instances"), params=params)
    return None


# -- native and unknown routes: plain text or JSON --------------------------------------------


def _classify(payload: object) -> _Body:
    if isinstance(payload, str):
        return _Body("native", [_Text(payload)], single=True)
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
                    f"column {exc.colno}){_quoting_hint(text)}; fix the JSON or send text/plain"
                ) from None
        except (RecursionError, ValueError) as exc:
            if is_json:
                raise _unreadable_json("request body", exc) from None
    return text


def _classify_object(payload: dict[str, Any]) -> _Body:
    params = payload.get("parameters")
    kserve = _classify_kserve_keys(payload)
    if kserve is not None:
        return kserve
    if "texts" in payload:
        return _Body("native", _text_list(payload["texts"], "texts"), params=params)
    if "text" in payload:
        item = _Text(_text_field(payload, "body"), payload.get("target"), "body")
        return _Body("native", [item], single=True, params=params)
    raise bad_request(
        f"JSON object has none of the keys inputs (KServe v2), instances (KServe v1), text, "
        f'texts (got keys: {_keys(payload)}); send e.g. {{"text": "..."}}'
    )


# -- shared body helpers ----------------------------------------------------------------------


def _utf8(body: bytes | bytearray, expected: str) -> str:
    """Raw body bytes as text; `expected` says what to send instead of an empty body."""
    if not body:
        raise bad_request(f"request body is empty; {expected}")
    if bytes(body[:2]) == GZIP_MAGIC:
        raise bad_request(
            "request body is gzip-compressed (it starts with the gzip magic bytes 1f 8b); "
            "Content-Encoding is not supported: send uncompressed JSON"
        )
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "send UTF-8 encoded text"
        ) from None


def _no_body(body: MissingBody, expected: str) -> RequestError:
    fields = _names(body.fields)
    form = f" (TorchServe read it as form fields: {fields})" if body.fields else ""
    return bad_request(f"request has no body{form}; {expected}")


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _keys(payload: Mapping[str, Any]) -> str:
    return _names(sorted(payload)) or "none"


def _names(names: Sequence[object], most: int = 8) -> str:
    """Some names of a request (keys, fields), each shown safely, the list cut at `most`."""
    listed = ", ".join(_bare(name) for name in names[:most])
    return listed + (f", ... ({len(names)} in all)" if len(names) > most else "")


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


def _text_list(items: object, where: str) -> list[_Text]:
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


def _v2_texts(inputs: object) -> list[_Text]:
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("inputs must be a non-empty list of BYTES tensors")
    texts: list[_Text] = []
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise bad_request(f"inputs[{i}] must be an object, got {type(tensor).__name__}")
        name = shown(tensor.get("name", f"inputs[{i}]"))
        datatype = tensor.get("datatype")
        if datatype != V2_TEXT_DATATYPE:
            raise bad_request(
                f"input {name} has datatype {shown(datatype)}; this model takes text: "
                f"send datatype {V2_TEXT_DATATYPE!r}"
            )
        data = tensor.get("data")
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list):
            raise bad_request(
                f"input {name} data must be a list of strings or a string, "
                f"got {type(data).__name__}"
            )
        _check_shape(name, tensor.get("shape"), len(items))
        texts.extend(_text_item(item, f"input {name} data[{j}]") for j, item in enumerate(items))
    return texts


def _check_shape(name: str, shape: object, count: int) -> None:
    """-1 (the blog's form) or absent means "any"; otherwise the sizes must multiply to count."""
    if shape is None or shape == -1:
        return
    dims = [shape] if isinstance(shape, int) else shape
    valid = isinstance(dims, list) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    )
    if not valid:
        raise bad_request(f"input {name} shape must be a list of integers, got {shown(shape)}")
    assert isinstance(dims, list)
    known = [d for d in dims if d != -1]
    if any(d < 0 for d in known):
        raise bad_request(f"input {name} shape {shown(shape)} has a negative size")
    size = product_past(known, count)
    fits = size == count if len(known) == len(dims) else (size > 0 and count % size == 0)
    if not fits:
        raise bad_request(f"input {name} shape {shown(shape)} disagrees with {count} data item(s)")


def product_past(sizes: Sequence[int], count: int) -> int:
    """The product of sizes, or a partial product past count (no product of the rest is less,
    so it compares with count as the whole would): thousands of huge sizes multiplied out
    would take minutes (a request's shape, a safetensors header's)."""
    if 0 in sizes:
        return 0
    product = 1
    for size in sizes:
        product *= size
        if product > count:
            break
    return product


def _text_item(item: object, where: str) -> _Text:
    """A text: plain, or the blog's JSON form {"text": ..., "target": ...} as a string or object.

    A string is that form only when it decodes to an object whose keys are exactly "text" (a
    string) and optionally "target"; any other string, JSON-looking or not, is the text itself.
    """
    if isinstance(item, str):
        decoded = _json_text(item, where) if item.lstrip().startswith("{") else None
        if isinstance(decoded, dict) and _is_text_form(decoded):
            return _Text(decoded["text"], decoded.get("target"), where)
        return _Text(item, None, where)
    if isinstance(item, dict):
        text = _text_field(item, where)
        if not set(item) <= TEXT_FORM_KEYS:
            raise bad_request(
                f"{where} has unknown key(s) {_names(sorted(set(item) - TEXT_FORM_KEYS))}; "
                'a text object holds "text" and optionally "target"'
            )
        return _Text(text, item.get("target"), where)
    raise bad_request(
        f'{where} must be a string or an object with a "text" string, got {type(item).__name__}'
    )


def _is_text_form(decoded: Mapping[str, Any]) -> bool:
    return "text" in decoded and set(decoded) <= TEXT_FORM_KEYS and isinstance(decoded["text"], str)


def _json_text(item: str, where: str) -> object:
    """A text that starts with "{" decoded as JSON; None when it is not JSON."""
    try:
        return json.loads(item)
    except json.JSONDecodeError:
        return None
    except (RecursionError, ValueError) as exc:
        raise _unreadable_json(
            f"{where} starts with '{{' but",
            exc,
            'send the text without the JSON around it, or as {"text": "...", "target": ...}',
        ) from None


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
            limit=Limit("max_texts_per_request", limit, len(texts)),
        )
    if action == "explain" and len(texts) > settings.max_explain_texts:
        raise RequestError(
            413,
            f"explain request holds {len(texts)} texts, more than the limit of "
            f"{settings.max_explain_texts} (max_explain_texts); split it, or ask the infer route "
            "for predictions only",
            limit=Limit("max_explain_texts", settings.max_explain_texts, len(texts)),
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
                limit=Limit("max_text_chars", settings.max_text_chars, len(text)),
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
            limit=Limit("max_explain_work", limit, work),
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
    tolerance = _tolerance(params, settings)
    first = settings.explain_steps if tolerance is None else min(LADDER_START, cap)
    return ExplainOptions(
        target=_target(params.get("target"), labels, "parameters"),
        n_steps=_int_param(params, "n_steps", first, cap),
        internal_batch_size=_int_param(
            params, "internal_batch_size", settings.internal_batch_size, 4096
        ),
        merge_subwords=_words_wanted(params, settings.merge_subwords),
        tolerance=tolerance,
        max_steps=cap,
    )


def _tolerance(params: Mapping[str, Any], settings: HandlerSettings) -> float | None:
    """parameters.tolerance, else the server's explain_tolerance unless n_steps is given."""
    if "tolerance" not in params:
        if "n_steps" in params or settings.explain_tolerance == 0:
            return None
        return settings.explain_tolerance
    value: object = params["tolerance"]
    if "n_steps" in params:
        raise bad_request(
            "parameters give both n_steps and tolerance; send n_steps for exactly that many "
            "integration steps or tolerance for the fewest steps that reach it, not both"
        )
    problem = tolerance_problem(value)
    if problem is not None:
        low, high = TOLERANCE_RANGE
        raise bad_request(
            f"tolerance {problem}, got {shown(value)}; send the |convergence delta| to reach "
            f"(an error in the class probability), e.g. 0.001, between {low:g} and {high:g}"
        )
    return float(value)  # type: ignore[arg-type]


def _words_wanted(params: Mapping[str, Any], default: bool) -> bool:
    """parameters.granularity "words" (the text's words) or "pieces" (the tokenizer's);
    merge_subwords true/false is the older spelling of the same choice."""
    words = _bool_param(params, "merge_subwords", default)
    if "granularity" not in params:
        return words
    value: object = params["granularity"]
    if value not in ("words", "pieces"):
        raise bad_request(f'granularity must be "words" or "pieces", got {shown(value)}')
    if "merge_subwords" in params and words != (value == "words"):
        raise bad_request(
            f"granularity {shown(value)} contradicts merge_subwords {words!r}; "
            "send granularity only"
        )
    return value == "words"


def _target(value: object, labels: Sequence[str], where: str) -> int | None:
    """A label index from a label name or index; `where` names a text's own target."""
    if value is None:
        return None
    prefix = "" if where == "parameters" else f"{where}: "
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(f"{prefix}target must be a label name or index, got {shown(value)}")
    if isinstance(value, int):
        if not 0 <= value < len(labels):
            raise bad_request(
                f"{prefix}target index {shown(value)} is out of range; the model has labels "
                f"0..{len(labels) - 1}"
            )
        return value
    if value in labels:
        return list(labels).index(value)
    raise bad_request(f"{prefix}unknown target label {shown(value)}; labels: {_labels(labels)}")


def _labels(labels: Sequence[str], most: int = 20) -> str:
    listed = ", ".join(labels[:most])
    return listed + (f", ... ({len(labels)} labels)" if len(labels) > most else "")


def _int_param(params: Mapping[str, Any], key: str, default: int, cap: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key} must be an integer, got {shown(value)}")
    if not 1 <= value <= cap:
        raise bad_request(f"{key} must be between 1 and {cap}, got {shown(value)}")
    return value


def _bool_param(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false, got {shown(value)}")
    return value
