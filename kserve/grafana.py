"""A Grafana dashboard for one deployment, in a ConfigMap Grafana's sidecar picks up.

PromQL uses the metric names of contracts.md: TorchServe's own (labels model_name, or Level and
Hostname) and the handler's (label ModelName, added by TorchServe's model_metrics_auto_detect).
"""

from __future__ import annotations

import json
from typing import Any

from scibert_pack.kserve.deployment_values import DeploymentValues
from scibert_pack.kserve.documents import CONTAINER_NAME, Document, metadata

_WINDOW = "[5m]"


def dashboard(r: DeploymentValues) -> dict[str, Any]:
    name = r.options.name
    ts = 'model_name="$model"'
    handler = 'ModelName="$model"'
    pod = f'container="{CONTAINER_NAME}", pod=~"{name}-predictor-.*"'
    panels = [
        _panel(
            "Request rate",
            "reqps",
            [
                (f"sum(rate(ts_inference_requests_total{{{ts}}}{_WINDOW}))", "requests/s"),
                (f"sum(rate(Requests4XX{_WINDOW}))", "4xx/s"),
                (f"sum(rate(Requests5XX{_WINDOW}))", "5xx/s"),
            ],
        ),
        _panel(
            "Latency per request (mean)",
            "ms",
            [
                (
                    f"sum(rate(ts_inference_latency_microseconds{{{ts}}}{_WINDOW})) / 1000 / "
                    f"sum(rate(ts_inference_requests_total{{{ts}}}{_WINDOW}))",
                    "inference",
                ),
                (
                    f"sum(rate(ts_queue_latency_microseconds{{{ts}}}{_WINDOW})) / 1000 / "
                    f"sum(rate(ts_inference_requests_total{{{ts}}}{_WINDOW}))",
                    "queue",
                ),
            ],
        ),
        _panel(
            "Batch size (texts per batch)",
            "short",
            [
                (f"avg(scibert_texts_per_batch{{{handler}}})", "mean"),
                (f"max(scibert_texts_per_batch{{{handler}}})", "max"),
            ],
        ),
        _panel(
            "Forward pass per batch",
            "ms",
            [
                (f"avg(scibert_inference_ms{{{handler}}})", "forward pass"),
                ('avg(HandlerTime{ModelName="$model"})', "handler"),
            ],
        ),
        _panel(
            "Explanation time",
            "ms",
            [
                (f"avg(scibert_explain_ms{{{handler}}})", "explain"),
                (f"avg(scibert_explain_steps{{{handler}}})", "n_steps"),
            ],
        ),
        _panel(
            "Worker memory",
            "bytes",
            [
                (f"sum(container_memory_working_set_bytes{{{pod}}}) by (pod)", "{{pod}}"),
                ("max(MemoryUsed) * 1024 * 1024", "TorchServe MemoryUsed"),
            ],
        ),
    ]
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)}
    return {
        "title": f"scibert-pack: {name}",
        "uid": f"scibert-pack-{name}"[:40],
        "tags": ["scibert-pack", "torchserve", "kserve"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "model",
                    "type": "constant",
                    "query": r.model_name,
                    "hide": 2,
                },
            ]
        },
        "panels": panels,
    }


def dashboard_config_map(r: DeploymentValues) -> Document:
    name = r.options.name
    text = json.dumps(dashboard(r), indent=2) + "\n"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            f"{name}-dashboard",
            r.options.namespace,
            # The label Grafana's dashboard sidecar watches for (kube-prometheus-stack default).
            labels={"grafana_dashboard": "1", "app.kubernetes.io/managed-by": "scibert-pack"},
        ),
        "data": {f"scibert-pack-{name}.json": text},
    }


def _panel(title: str, unit: str, queries: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }
