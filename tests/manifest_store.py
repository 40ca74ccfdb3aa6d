"""A small fake model store (what `scibert-pack build` writes) for the manifest tests."""

from __future__ import annotations

import json
from pathlib import Path

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
