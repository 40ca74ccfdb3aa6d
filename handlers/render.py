"""Response bodies for each protocol (KServe v2, KServe v1, native) and for errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .explain import Explanation
from .protocol import Limit, Request


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    labels: tuple[str, ...]
    # Set when predictions come from other weights than explanations (build --runtime
    # torch-int8): every explanation names the weights it was computed with.
    explained_with: str | None = None


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: tuple[float, ...]
    truncated: bool


# The HTTP reason phrase of every status the handler answers with. TorchServe's worker sends the
# phrase's length in characters but writes its UTF-8 bytes, Netty refuses CR/LF, and a lone
# surrogate cannot be encoded: any of them kills the worker and fails its whole batch. So the
# phrase is fixed per status and never holds request content; details go in the JSON body only.
REASON_PHRASES = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


def reason_phrase(status: int) -> str:
    """The fixed, plain-ASCII reason phrase of `status`."""
    return REASON_PHRASES.get(status, "Error" if status >= 400 else "OK")


def render_error(code: int, message: str, limit: Limit | None = None) -> dict[str, Any]:
    """KServe's {"error": message} plus the code, and the limit a request went over, if any."""
    body: dict[str, Any] = {"error": message, "code": code}
    if limit is not None:
        body.update(limit_name=limit.name, limit=limit.limit, value=limit.value)
    return body


def render_predictions(
    request: Request, predictions: Sequence[Prediction], info: ModelInfo
) -> object:
    if request.protocol == "v2":
        return _v2_infer(request, predictions, info)
    items = [_prediction_item(p, info) for p in predictions]
    if request.protocol == "v1":
        return {"predictions": items}
    return items[0] if request.single else items


def render_explanations(
    request: Request,
    predictions: Sequence[Prediction],
    explanations: Sequence[Explanation],
    info: ModelInfo,
) -> object:
    items = [_explanation_item(p, e, info) for p, e in zip(predictions, explanations, strict=True)]
    if request.protocol == "v2":
        output = {"name": "explain", "datatype": "BYTES", "shape": [len(items)], "data": items}
        return {**_v2_header(request, info), "outputs": [output]}
    if request.protocol == "v1":
        return {"explanations": items}
    return items[0] if request.single else items


def _v2_header(request: Request, info: ModelInfo) -> dict[str, Any]:
    header: dict[str, Any] = {"model_name": info.name, "model_version": info.version}
    if request.request_id is not None:
        header = {"id": request.request_id, **header}
    return header


def _v2_infer(request: Request, predictions: Sequence[Prediction], info: ModelInfo) -> object:
    count = len(predictions)
    labels = {"name": "label", "datatype": "BYTES", "shape": [count]}
    probabilities = {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [count, len(info.labels)],
    }
    return {
        **_v2_header(request, info),
        "outputs": [
            {**labels, "data": [p.label for p in predictions]},
            {**probabilities, "data": [v for p in predictions for v in p.probabilities]},
        ],
        "parameters": {
            "labels": list(info.labels),
            "truncated": [p.truncated for p in predictions],
        },
    }


def _prediction_item(prediction: Prediction, info: ModelInfo) -> dict[str, Any]:
    return {
        "label": prediction.label,
        "probabilities": dict(zip(info.labels, prediction.probabilities, strict=True)),
        "truncated": prediction.truncated,
    }


def _explanation_item(
    prediction: Prediction, explanation: Explanation, info: ModelInfo
) -> dict[str, Any]:
    item = {
        "words": explanation.words,
        "importances": explanation.importances,
        "delta": explanation.delta,
        "label": prediction.label,
        "target": info.labels[explanation.target],
        "truncated": prediction.truncated,
        "granularity": explanation.granularity,
        "n_steps": explanation.n_steps,
    }
    if explanation.tolerance is not None:
        item.update(tolerance=explanation.tolerance, converged=explanation.converged)
    if info.explained_with is not None:
        item["explained_with"] = info.explained_with
    return item if explanation.note is None else {**item, "note": explanation.note}
