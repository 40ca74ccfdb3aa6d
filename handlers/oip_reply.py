"""Send each reply the way its request came: binary outputs, or the shape gRPC can carry."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from . import oip_binary, oip_grpc
from .oip_binary import OutputSpec

logger = logging.getLogger(__name__)


class _Reply(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def body(self) -> object: ...
    @property
    def outputs(self) -> OutputSpec | None: ...


class _Raw(Protocol):
    @property
    def body(self) -> object: ...
    @property
    def grpc(self) -> bool: ...


class _Info(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...


R = TypeVar("R", bound=_Reply)


def header_lookup(headers: Mapping[str, object], name: str) -> object:
    """A request header's value whatever case the client wrote its name in; None if absent."""
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return value
    return None


def grpc_replies(raws: Sequence[_Raw], replies: Sequence[R], info: _Info) -> list[R]:
    """Failed gRPC requests in a form TorchServe's gRPC frontend can send without crashing.

    A batch of one failed gRPC request raises, which TorchServe turns into a gRPC error status
    (400 -> INVALID_ARGUMENT, 413 -> RESOURCE_EXHAUSTED, ...). In a batch with other requests
    that would fail them too: the failed one is answered with `error` and `error_code` outputs.
    """
    out = list(replies)
    for idx, (raw, reply) in enumerate(zip(raws, replies, strict=True)):
        if not raw.grpc or reply.status == 200:
            continue
        body = reply.body
        message = str(body.get("error")) if isinstance(body, dict) else "request failed"
        if len(raws) == 1:
            raise oip_grpc.batch_error(message, reply.status)
        error = oip_grpc.error_body(raw.body, info.name, info.version, reply.status, message)
        out[idx] = dataclasses.replace(reply, body=error)  # type: ignore[type-var]
    return out


def encode_reply(reply: _Reply, idx: int, context: Any) -> str | bytes:
    """The reply's bytes: the binary extension when its request asked for binary outputs."""
    spec = reply.outputs
    if reply.status != 200 or spec is None or not oip_binary.wants_binary(reply.body, spec):
        return json.dumps(reply.body)
    assert isinstance(reply.body, dict)
    try:
        data, length = oip_binary.encode_reply(reply.body, spec)
    except Exception:
        logger.exception("encoding the binary response of request %d failed", idx)
        message = f"encoding the binary response failed for request {idx}; see the worker log"
        context.set_response_status(500, "Internal Server Error", idx)
        return json.dumps({"error": message, "code": 500})
    context.set_response_content_type(idx, oip_binary.BINARY_CONTENT_TYPE)
    context.set_response_header(idx, oip_binary.HEADER_LENGTH, str(length))
    return data
