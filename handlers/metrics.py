"""Custom metrics through TorchServe's context.metrics, without importing ts.

TorchServe's add_metric(name, value, unit, idx=None, dimensions=[], metric_type=COUNTER) wants
its own MetricTypes enum; the GAUGE member is taken from the enum of that default argument.
"""

from __future__ import annotations

import enum
import inspect
from typing import Any, Literal

TEXTS_PER_BATCH = "scibert_texts_per_batch"
INFERENCE_MS = "scibert_inference_ms"
EXPLAIN_MS = "scibert_explain_ms"
EXPLAIN_STEPS = "scibert_explain_steps"
# Counters: their rates give the mean requests per batch, the proof that batching happens.
REQUESTS_TOTAL = "scibert_requests_total"
BATCHES_TOTAL = "scibert_batches_total"
# Forward passes of predictions: above BATCHES_TOTAL when batches exceed max_batch_tokens.
FORWARD_PASSES_TOTAL = "scibert_forward_passes_total"

Unit = Literal["ms", "count"]


class Metrics:
    """Gauges and counters on a TorchServe metrics cache; does nothing when there is none."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._gauge = _metric_type(cache, "GAUGE") if cache is not None else None
        self._counter = _metric_type(cache, "COUNTER") if cache is not None else None

    def gauge(self, name: str, value: float, unit: Unit) -> None:
        if self._cache is None:
            return
        self._cache.add_metric(name, float(value), unit=unit, metric_type=self._gauge)

    def count(self, name: str, value: float) -> None:
        if self._cache is None:
            return
        self._cache.add_metric(name, float(value), unit="count", metric_type=self._counter)


def _metric_type(cache: Any, member: str) -> object:
    try:
        default = inspect.signature(cache.add_metric).parameters["metric_type"].default
    except (KeyError, TypeError, ValueError):
        return member.lower()
    if isinstance(default, enum.Enum):
        return type(default)[member]
    return member.lower()
