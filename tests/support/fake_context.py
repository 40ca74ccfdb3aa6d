"""A stand-in for ts.context.Context: the parts of its API the handler uses, nothing from ts.

Rows and headers are shaped as TorchServe 0.12 delivers them (see .notes/handler-facts.md): a JSON
body decoded under row["body"], text/plain as str, other bodies as bytearray, a form-encoded body
as its fields (no "body"); per request a header "body" -> {"content-type": ...} ("" when the client
sent none), the client's Content-Type and the headers the route adds: "explain": "True"/"False" on
the v2, v1 and native routes, and "url_path": "" on the native ones only (probed on a real server:
the v2 and v1 routes add the same headers, /invocations neither).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RouteName = Literal["v2", "v1", "native"]
# Longer reason phrases are request content leaking into the status line.
MAX_PHRASE_CHARS = 40


class MetricTypes(enum.Enum):
    """Mirrors ts.metrics.metric_type_enum.MetricTypes."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass
class RecordedMetric:
    name: str
    value: float
    unit: str
    metric_type: MetricTypes


@dataclass
class FakeMetrics:
    """Records add_metric calls; same signature as TorchServe's MetricCacheAbstract.add_metric."""

    recorded: list[RecordedMetric] = field(default_factory=list)

    def add_metric(
        self,
        name: str,
        value: float,
        unit: str,
        idx: str | None = None,
        dimensions: list[Any] | None = None,
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> None:
        if not isinstance(metric_type, MetricTypes):
            raise TypeError("`metric_type` must be a MetricTypes enum")
        self.recorded.append(RecordedMetric(name, value, unit, metric_type))

    def named(self, name: str) -> list[RecordedMetric]:
        return [m for m in self.recorded if m.name == name]


@dataclass(frozen=True)
class HttpRequest:
    """One client request as the front end forwards it.

    body: the decoded JSON value for application/json, a str for text/plain, bytes for anything
    TorchServe could not decode (invalid JSON or UTF-8, octet-stream).
    """

    body: object
    explain: bool = False
    content_type: str | None = "application/json"
    # Where it was sent: /v2/models/NAME/infer|explain, /v1/models/NAME:predict|:explain,
    # /predictions|/explanations/NAME (the lenient route, so the default), or None for a route
    # that adds no header (/invocations, which cannot explain).
    route: RouteName | None = "native"
    # A form-encoded request (curl -d without a Content-Type): TorchServe passes its fields only.
    form: Mapping[str, bytes] | None = None
    # Extra request headers as the client sent them (e.g. Content-Encoding).
    extra_headers: Mapping[str, str] | None = None

    def row(self) -> dict[str, object]:
        if self.form is not None:
            return {key: bytearray(value) for key, value in self.form.items()}
        # Decoded JSON / text/plain str pass through; raw bytes arrive as bytearray.
        body = bytearray(self.body) if isinstance(self.body, bytes) else self.body
        return {"body": body}

    def headers(self) -> dict[str, object]:
        if self.route is None and self.explain:
            raise ValueError("only the v2, v1 and native routes explain; pass route=")
        headers: dict[str, object] = {"body": {"content-type": self.content_type or ""}}
        if self.route is not None:
            headers["explain"] = "True" if self.explain else "False"
        if self.route == "native":
            headers["url_path"] = ""
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        headers.update(self.extra_headers or {})
        return headers


class FakeContext:
    def __init__(
        self,
        model_dir: Path | str = "/nonexistent",
        *,
        handler_settings: Mapping[str, Any] | None = None,
        model_name: str = "scibert",
        model_version: str = "1.0",
        gpu_id: int | None = None,
        metrics: FakeMetrics | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest = {"model": {"modelName": model_name, "modelVersion": model_version}}
        self.system_properties: dict[str, Any] = {
            "model_dir": str(model_dir),
            "gpu_id": gpu_id,
            "batch_size": 4,
        }
        self.model_yaml_config: dict[str, Any] = {"batchSize": 4}
        if handler_settings is not None:
            self.model_yaml_config["handler"] = dict(handler_settings)
        self.metrics = metrics
        self._headers: list[dict[str, object]] = []
        self._status: dict[int, tuple[int, str]] = {}
        self._response_headers: dict[int, dict[str, str]] = {}

    def start_batch(self, requests: Sequence[HttpRequest]) -> list[dict[str, object]]:
        """Reset per-batch state as TorchServe does and return the rows handle() receives."""
        self._headers = [r.headers() for r in requests]
        self._status = {}
        self._response_headers = {}
        return [r.row() for r in requests]

    def get_request_header(self, idx: int, key: str) -> object:
        return self._headers[idx].get(key)

    def get_all_request_header(self, idx: int) -> dict[str, object]:
        return dict(self._headers[idx])

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        # What TorchServe's worker and front end survive (seen on 0.12): a non-ASCII phrase
        # breaks the frame length, CR/LF breaks Netty, a lone surrogate cannot be encoded; each
        # kills the worker. Fail here as loudly.
        if not (phrase.isascii() and phrase.isprintable() and len(phrase) <= MAX_PHRASE_CHARS):
            raise AssertionError(f"a reason phrase TorchServe cannot carry: {phrase[:80]!r}")
        self._status[idx] = (code, phrase)

    def get_response_status(self, idx: int) -> tuple[int, str]:
        return self._status.get(idx, (200, ""))

    def set_response_content_type(self, idx: int, value: str) -> None:
        self._response_headers.setdefault(idx, {})["content-type"] = value

    def get_response_content_type(self, idx: int) -> str | None:
        return self._response_headers.get(idx, {}).get("content-type")


@dataclass(frozen=True)
class Response:
    status: int
    phrase: str
    body: Any
    content_type: str | None


def run_batch(handle: Any, context: FakeContext, requests: Sequence[HttpRequest]) -> list[Response]:
    """Send one batch through handle(rows, context) and collect every request's response."""
    rows = context.start_batch(requests)
    out = handle(rows, context)
    assert isinstance(out, list) and len(out) == len(requests)
    return [
        Response(
            *context.get_response_status(i),
            json.loads(out[i]),
            context.get_response_content_type(i),
        )
        for i in range(len(requests))
    ]
