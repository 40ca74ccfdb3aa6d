"""Requests from TorchServe 0.12's own Open Inference Protocol gRPC service, and its replies.

What the frontend does (OpenInferenceProtocolImpl.modelInfer and GRPCJob, tag v0.12.0): it turns a
ModelInferRequest into a KServe v2 JSON body `{"id", "model_name", "inputs": [{"name", "shape",
"datatype", "data"}]}` with content type application/json and NO request headers, BYTES
`bytes_contents` each base64-encoded; `raw_input_contents`, all `parameters` and the requested
`outputs` are dropped. It reads the handler's reply as that JSON (`id`, `model_name`,
`model_version`, `outputs`) whatever status the handler set: a reply without those keys throws a
NullPointerException in the frontend and its worker restarts. Only an exception out of the handler
(TorchServe's PredictionException) becomes a gRPC error status, for every request of the batch.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from .oip_binary import OipError, echo

# The only header TorchServe gives a gRPC request: the body part's content type.
_BODY_PART = "body"


def is_grpc_request(headers: Mapping[str, object], body: object) -> bool:
    """A request from the OIP gRPC service: no HTTP header at all, the v2 body it builds."""
    return (
        set(headers) == {_BODY_PART}
        and isinstance(body, dict)
        and {"id", "model_name", "inputs"} <= set(body)
    )


def decode_request(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The request as REST would carry it: each BYTES input's base64 elements decoded."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list):
        return dict(payload)
    return {**payload, "inputs": [_decode_input(t, i) for i, t in enumerate(inputs)]}


def _decode_input(tensor: object, i: int) -> object:
    if not isinstance(tensor, dict) or tensor.get("datatype") != "BYTES":
        return tensor
    name = echo(tensor.get("name", f"inputs[{i}]"))
    data = tensor.get("data")
    if not isinstance(data, list) or not data:
        raise OipError(
            f"input {name} has no contents.bytes_contents; TorchServe 0.12's gRPC service drops "
            "raw_input_contents, so send the texts as contents.bytes_contents (UTF-8)"
        )
    texts: list[str] = []
    for j, item in enumerate(data):
        try:
            texts.append(base64.b64decode(str(item), validate=True).decode("utf-8"))
        except (binascii.Error, ValueError):
            raise OipError(
                f"input {name} bytes_contents[{j}] is not valid UTF-8 text; send UTF-8 encoded text"
            ) from None
    return {**tensor, "data": texts}


def error_body(
    payload: object, model_name: str, model_version: str, code: int, message: str
) -> dict[str, Any]:
    """An error the gRPC frontend can carry: a reply whose outputs are `error` and `error_code`."""
    request_id = payload.get("id") if isinstance(payload, dict) else None
    return {
        "id": request_id if isinstance(request_id, str) else "",
        "model_name": model_name,
        "model_version": model_version,
        "outputs": [
            {"name": "error", "datatype": "BYTES", "shape": [1], "data": [message]},
            {"name": "error_code", "datatype": "INT32", "shape": [1], "data": [code]},
        ],
    }


def batch_error(message: str, code: int) -> Exception:
    """The exception TorchServe turns into a gRPC error status for the whole batch."""
    try:
        from ts.utils.util import PredictionException
    except ImportError:  # outside a TorchServe worker
        return RuntimeError(message)
    error: Exception = PredictionException(message, code)
    return error
