"""The Open Inference Protocol's binary tensor extension, both ways, and requested outputs.

A binary request carries the header `Inference-Header-Content-Length: N`: its first N bytes are
the JSON request; then, in input order, the raw bytes of every input whose
`parameters.binary_data_size` is set. A BYTES tensor is its elements, each a 4-byte little-endian
length and that many bytes. A reply answers an output in binary when the request asked for it
(`parameters.binary_data_output`, or the output's own `parameters.binary_data`): the output then
holds `parameters.binary_data_size` instead of `data`, and its bytes follow the JSON header.

Standard library only; errors are `OipError` (the protocol module turns them into 400s).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
_ELEMENT_LENGTH = struct.Struct("<I")
# The outputs of a v2 reply per action (handlers/render.py writes them).
V2_OUTPUTS = {"predict": ("label", "probabilities"), "explain": ("explain",)}
# How much of a client-chosen name or value an error message repeats.
_ECHO_CHARS = 40


class OipError(Exception):
    """A request the extension cannot read: that request's 400 with `message`."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def echo(value: object) -> str:
    """A client value quoted for an error message: ASCII, on one line, a few dozen characters."""
    text = ascii(value)
    return text if len(text) <= _ECHO_CHARS else f"{text[: _ECHO_CHARS - 3]}..."


# -- requests -------------------------------------------------------------------------------


def header_length(headers: Mapping[str, object]) -> int | None:
    """The `Inference-Header-Content-Length` of a request (any header case), None if absent."""
    wanted = HEADER_LENGTH.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            text = str(value).strip()
            if not (text.isascii() and text.isdigit()) or len(text) > 12:
                raise OipError(
                    f"header {HEADER_LENGTH} is {echo(value)}, not a byte count; send the length "
                    "of the JSON header in bytes (a non-negative integer)"
                )
            return int(text)
    return None


def decode_request(body: bytes | bytearray, length: int) -> dict[str, Any]:
    """The JSON request of a binary body, with every binary BYTES input decoded into `data`."""
    data = memoryview(bytes(body))
    if length > len(data):
        raise OipError(
            f"header {HEADER_LENGTH} says {length} bytes but the body has only {len(data)}; "
            "send the length of the JSON part of the body"
        )
    header = _json_header(data[:length])
    inputs = header.get("inputs")
    offset = length
    if isinstance(inputs, list):
        for i, tensor in enumerate(inputs):
            if isinstance(tensor, dict):
                offset = _decode_input(tensor, i, data, offset)
    if offset != len(data):
        raise OipError(
            f"the body has {len(data) - offset} byte(s) after the JSON header and the binary "
            "inputs its binary_data_size parameters announce; make the sizes add up to the body"
        )
    return header


def _json_header(raw: memoryview) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise OipError(
            f"the JSON header of the binary request is not valid UTF-8 ({exc.reason} at byte "
            f"{exc.start}); check {HEADER_LENGTH}"
        ) from None
    except json.JSONDecodeError as exc:
        raise OipError(
            f"the first {len(raw)} bytes ({HEADER_LENGTH}) are not a JSON request ({exc.msg} at "
            f"character {exc.pos}); check {HEADER_LENGTH}"
        ) from None
    except (RecursionError, ValueError):
        raise OipError(
            "the JSON header of the binary request is nested too deeply or holds an oversized "
            "number; send a flat KServe v2 request"
        ) from None
    if not isinstance(header, dict):
        raise OipError(
            f"the JSON header of the binary request is a {type(header).__name__}, not an object; "
            'send {"inputs": [...]}'
        )
    return header


def _decode_input(tensor: dict[str, Any], i: int, data: memoryview, offset: int) -> int:
    params = tensor.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return offset
    name = echo(tensor.get("name", f"inputs[{i}]"))
    size = params["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise OipError(
            f"input {name} parameters.binary_data_size is {echo(size)}; send the byte count of "
            "its binary data (a non-negative integer)"
        )
    if size > len(data) - offset:
        raise OipError(
            f"input {name} announces {size} bytes of binary data but only {len(data) - offset} "
            "follow in the body; send binary_data_size equal to the bytes sent"
        )
    if tensor.get("datatype") != "BYTES":
        raise OipError(
            f"input {name} has datatype {echo(tensor.get('datatype'))}; this model takes text: "
            "send datatype 'BYTES'"
        )
    tensor["data"] = _bytes_elements(data[offset : offset + size], name)
    rest = {k: v for k, v in params.items() if k != "binary_data_size"}
    if rest:
        tensor["parameters"] = rest
    else:
        del tensor["parameters"]
    return offset + size


def _bytes_elements(chunk: memoryview, name: str) -> list[str]:
    texts: list[str] = []
    pos = 0
    while pos < len(chunk):
        if len(chunk) - pos < _ELEMENT_LENGTH.size:
            raise OipError(
                f"input {name} element {len(texts)} is cut inside its 4-byte length prefix; "
                "send each BYTES element as a 4-byte little-endian length and its bytes"
            )
        (length,) = _ELEMENT_LENGTH.unpack_from(chunk, pos)
        pos += _ELEMENT_LENGTH.size
        if length > len(chunk) - pos:
            raise OipError(
                f"input {name} element {len(texts)} says {length} bytes but only "
                f"{len(chunk) - pos} remain in the input's binary data; check the length prefixes"
            )
        try:
            texts.append(bytes(chunk[pos : pos + length]).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise OipError(
                f"input {name} element {len(texts)} is not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start}); send UTF-8 encoded text"
            ) from None
        pos += length
    return texts


# -- requested outputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSpec:
    """Which outputs a v2 request wants and which of them in binary."""

    names: tuple[str, ...] | None  # None: every output
    binary: frozenset[str]  # outputs asked for in binary
    binary_default: bool  # parameters.binary_data_output
    plain: frozenset[str] = frozenset()  # outputs whose binary_data is explicitly false

    def is_binary(self, name: str) -> bool:
        return name in self.binary or (self.binary_default and name not in self.plain)


def parse_outputs(payload: Mapping[str, Any]) -> OutputSpec | None:
    """The outputs a v2 request names and its binary flags; None when it asks for nothing."""
    params = payload.get("parameters")
    default = params.get("binary_data_output", False) if isinstance(params, dict) else False
    if not isinstance(default, bool):
        raise OipError(f"parameters.binary_data_output must be true or false, got {echo(default)}")
    outputs = payload.get("outputs")
    if outputs is None:
        return OutputSpec(None, frozenset(), True) if default else None
    if not isinstance(outputs, list):
        raise OipError(
            f"outputs must be a list of objects with a name, got {type(outputs).__name__}"
        )
    names: list[str] = []
    binary: set[str] = set()
    plain: set[str] = set()
    for i, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise OipError(f'outputs[{i}] must be an object with a "name" string')
        flag = _binary_flag(output, name)
        if flag is True:
            binary.add(name)
        elif flag is False:
            plain.add(name)
        names.append(name)
    return OutputSpec(tuple(names), frozenset(binary), default, frozenset(plain))


def _binary_flag(output: Mapping[str, Any], name: str) -> bool | None:
    params = output.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise OipError(f"output {echo(name)} parameters must be an object")
    flag = params.get("binary_data")
    if flag is not None and not isinstance(flag, bool):
        raise OipError(
            f"output {echo(name)} parameters.binary_data must be true or false, got {echo(flag)}"
        )
    return flag


def check_outputs(spec: OutputSpec | None, known: Sequence[str]) -> None:
    if spec is None or spec.names is None:
        return
    for name in spec.names:
        if name not in known:
            raise OipError(
                f"unknown output {echo(name)}; this route answers the outputs "
                f"{', '.join(known)}: request some of those, or leave outputs out for all"
            )


def select_outputs(body: object, spec: OutputSpec | None) -> object:
    """A v2 reply with only the requested outputs, in the order they were requested."""
    if spec is None or spec.names is None or not isinstance(body, dict):
        return body
    by_name = {output["name"]: output for output in body["outputs"]}
    return {**body, "outputs": [by_name[name] for name in dict.fromkeys(spec.names)]}


# -- replies --------------------------------------------------------------------------------


def wants_binary(body: object, spec: OutputSpec | None) -> bool:
    if spec is None or not isinstance(body, dict) or not isinstance(body.get("outputs"), list):
        return False
    return any(spec.is_binary(output["name"]) for output in body["outputs"])


def encode_reply(body: dict[str, Any], spec: OutputSpec) -> tuple[bytes, int]:
    """The binary reply (JSON header + output bytes) and the JSON header's length."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in body["outputs"]:
        if not spec.is_binary(output["name"]):
            outputs.append(output)
            continue
        blob = tensor_bytes(output["datatype"], output["data"])
        blobs.append(blob)
        rest = {k: v for k, v in output.items() if k != "data"}
        params = {**rest.get("parameters", {}), "binary_data_size": len(blob)}
        outputs.append({**rest, "parameters": params})
    header = json.dumps({**body, "outputs": outputs}).encode("utf-8")
    return header + b"".join(blobs), len(header)


def tensor_bytes(datatype: str, data: Iterable[object]) -> bytes:
    """One tensor's data in the extension's layout (BYTES elements; FP32 as little-endian)."""
    items = list(data)
    if datatype == "FP32":
        return struct.pack(f"<{len(items)}f", *items)
    if datatype == "BYTES":
        return b"".join(_element(item) for item in items)
    raise ValueError(f"no binary layout for datatype {datatype}")


def encode_elements(texts: Iterable[str]) -> bytes:
    """BYTES elements as a client sends them: a 4-byte little-endian length, then the UTF-8."""
    return b"".join(_element(text) for text in texts)


def _element(item: object) -> bytes:
    raw = item.encode("utf-8") if isinstance(item, str) else json.dumps(item).encode("utf-8")
    return _ELEMENT_LENGTH.pack(len(raw)) + raw
