"""A small fake model store (what `scibert-pack build` writes) and the table of option
combinations, for the manifest tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VERSIONS = {
    "scibert_pack": "0.1.0",
    "torch": "2.13.0",
    "transformers": "4.46.3",
    "captum": "0.8.0",
    "torchserve": "0.12.0",
    "torch_model_archiver": "0.12.0",
    "python": "3.11.9",
}


def write_store(
    out: Path,
    *,
    model_name: str = "scibert",
    host: str = "0.0.0.0",
    metrics_port: int = 8082,
    token_auth: bool = False,
    metrics_mode: str = "prometheus",
    served: tuple[str, ...] | None = None,
    versions: dict[str, str] | None = None,
) -> Path:
    served = served or (model_name,)
    snapshot = {
        "name": "startup.cfg",
        "modelCount": len(served),
        "models": {
            name: {
                "1.0": {
                    "defaultVersion": True,
                    "marName": f"{name}.mar",
                    "minWorkers": 1,
                    "maxWorkers": 1,
                    "batchSize": 8,
                    "maxBatchDelay": 10,
                }
            }
            for name in served
        },
    }
    (out / "config").mkdir(parents=True)
    (out / "model-store").mkdir()
    (out / "config" / "config.properties").write_text(
        "# fake store for tests\n"
        f"inference_address=http://{host}:8085\n"
        f"management_address=http://{host}:8081\n"
        f"metrics_address=http://{host}:{metrics_port}\n"
        f"metrics_mode={metrics_mode}\n"
        f"model_snapshot={json.dumps(snapshot)}\n"
        f"disable_token_authorization={'false' if token_auth else 'true'}\n",
        encoding="utf-8",
    )
    # Not a real archive: the manifest reads names and ports, the PVC copy steps hash it.
    (out / "model-store" / f"{model_name}.mar").write_bytes(
        b"PK fake archive of " + model_name.encode()
    )
    report = {
        "schema": "scibert-pack/build-report/v1",
        "model_name": model_name,
        "model_version": "1.0",
        "profile": "local" if host == "127.0.0.1" else "kserve",
        "ports": {
            "inference": 8085,
            "management": 8081,
            "metrics": metrics_port,
            "grpc_inference": 7070,
            "grpc_management": 7071,
        },
        "token_auth": token_auth,
        "versions": {**VERSIONS, **(versions or {})},
    }
    (out / "build-report.json").write_text(json.dumps(report), encoding="utf-8")
    return out


# Every option combination: the strict schema and the YAML round trip run over all of them.
COMBINATIONS: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("v1", {"protocol": "v1"}),
    ("stock-runtime-v1", {"runtime": "kserve-torchserve", "protocol": "v1"}),
    ("stock-runtime-v2", {"runtime": "kserve-torchserve", "protocol": "v2"}),
    ("stock-runtime-gpu", {"runtime": "kserve-torchserve", "gpu": 1}),
    ("stock-runtime-version", {"runtime": "kserve-torchserve", "runtime_version": "0.12.0"}),
    ("namespace", {"namespace": "ml-serving"}),
    ("model-name", {"model_name": "SciBERT_v1.2"}),
    ("timeout", {"timeout": 300}),
    ("batcher-v1", {"protocol": "v1", "batcher_max_batch_size": 32, "batcher_max_latency": 50}),
    ("batcher-size-only", {"protocol": "v1", "batcher_max_batch_size": 8}),
    ("batcher-timeout", {"protocol": "v1", "batcher_max_latency": 20, "batcher_timeout": 60}),
    ("batcher-v2", {"batcher_max_batch_size": 8}),
    ("scale-to-zero", {"min_replicas": 0, "max_replicas": 3}),
    ("replicas", {"min_replicas": 2, "max_replicas": 10}),
    ("concurrency", {"container_concurrency": 4, "autoscaling_target": 3}),
    ("kpa-rps", {"autoscaling_metric": "rps", "autoscaling_target": 50}),
    ("kpa-target-only", {"autoscaling_target": 2}),
    ("hpa-cpu", {"autoscaler": "hpa", "autoscaling_target": 70, "min_replicas": 1}),
    ("hpa-memory", {"autoscaler": "hpa", "autoscaling_metric": "memory"}),
    ("resources", {"cpu": "500m", "memory": "3Gi"}),
    ("fractional-cpu", {"cpu": "1.5", "memory": "2048Mi"}),
    ("gpu", {"gpu": 2}),
    ("canary", {"canary_traffic_percent": 10}),
    ("canary-zero", {"canary_traffic_percent": 0}),
    ("service-account", {"service_account": "s3-reader"}),
    ("no-prometheus", {"prometheus": False}),
    ("metrics-port", {"metrics_port": 9082}),
    ("grafana", {"grafana": True}),
    ("cluster-runtime", {"cluster_runtime": True, "runtime_name": "scibert-pack-ts"}),
    ("image", {"image": "registry.example.com/ml/scibert-ts:1"}),
    ("pvc", {"storage_uri": "pvc://model-store/scibert/v1", "pvc_size": "10Gi"}),
    # The root of a claim cannot be filled atomically: only an InferenceService is written.
    ("pvc-root", {"storage_uri": "pvc://model-store", "only": "serving"}),
    ("pvc-storage-class", {"storage_uri": "pvc://model-store/s", "storage_class": "standard"}),
    ("pvc-serving-only", {"storage_uri": "pvc://model-store/scibert", "only": "serving"}),
    ("gs", {"storage_uri": "gs://bucket/scibert/"}),
    ("https", {"storage_uri": "https://example.com/scibert.tar.gz"}),
    # Values YAML would read as numbers or booleans unless quoted.
    ("yaml-quoting", {"model_name": "1.0", "runtime_name": "true", "cpu": "1e3"}),
    (
        "everything-kpa",
        {
            "namespace": "prod",
            "protocol": "v1",
            "timeout": 120,
            "batcher_max_batch_size": 16,
            "batcher_max_latency": 100,
            "min_replicas": 1,
            "max_replicas": 4,
            "container_concurrency": 8,
            "autoscaling_target": 6,
            "cpu": "4",
            "memory": "8Gi",
            "gpu": 1,
            "canary_traffic_percent": 25,
            "service_account": "s3-reader",
            "grafana": True,
        },
    ),
    (
        "everything-hpa-stock",
        {
            "runtime": "kserve-torchserve",
            "protocol": "v1",
            "autoscaler": "hpa",
            "autoscaling_metric": "cpu",
            "autoscaling_target": 60,
            "min_replicas": 2,
            "max_replicas": 6,
            "timeout": 60,
            "service_account": "sa",
        },
    ),
]
