"""Every option combination gives InferenceService YAML that KServe's strict CRD schema accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from scibert_pack.kserve.manifest import build_manifest
from scibert_pack.kserve.options import ManifestOptions

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "kserve"
STRICT_SCHEMA = SHARED / "inferenceservice.v1beta1.strict.schema.json"
BASE = {"name": "scibert", "storage_uri": "s3://models/scibert/v1/"}

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
    ("pvc-root", {"storage_uri": "pvc://model-store", "storage_class": "standard"}),
    ("pvc-serving-only", {"storage_uri": "pvc://model-store/scibert", "only": "serving"}),
    ("gs", {"storage_uri": "gs://bucket/scibert/"}),
    ("https", {"storage_uri": "https://example.com/scibert.tar.gz"}),
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


@pytest.fixture(scope="session")
def strict_validator() -> Draft7Validator:
    schema = json.loads(STRICT_SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _isvc(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (isvc,) = [d for d in documents if d["kind"] == "InferenceService"]
    return isvc


@pytest.mark.parametrize("extra", [c[1] for c in COMBINATIONS], ids=[c[0] for c in COMBINATIONS])
def test_inference_service_passes_strict_schema(
    strict_validator: Draft7Validator, extra: dict[str, Any]
) -> None:
    result = build_manifest(ManifestOptions(**{**BASE, **extra}))
    # Validate what kubectl would read: the printed YAML, parsed back.
    isvc = _isvc(list(yaml.safe_load_all(result.yaml)))
    errors = sorted(strict_validator.iter_errors(isvc), key=lambda e: list(e.absolute_path))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("maxBatchSze", 8),  # the blog's kind of typo
        ("minReplica", 1),
    ],
    ids=["batcher-typo", "predictor-typo"],
)
def test_strict_schema_catches_typos(strict_validator: Draft7Validator, key: str, bad: int) -> None:
    """The schema the table relies on does reject what KServe would silently drop."""
    isvc = build_manifest(ManifestOptions(**BASE, protocol="v1", batcher_max_batch_size=4))
    doc = _isvc(list(isvc.documents))
    target = (
        doc["spec"]["predictor"]["batcher"] if key.startswith("max") else doc["spec"]["predictor"]
    )
    target[key] = bad
    assert not strict_validator.is_valid(doc)


def test_annotation_number_must_be_string(strict_validator: Draft7Validator) -> None:
    doc = _isvc(list(build_manifest(ManifestOptions(**BASE)).documents))
    doc["metadata"]["annotations"]["prometheus.io/port"] = 8082
    assert not strict_validator.is_valid(doc)


def test_manifest_from_a_really_built_store(tiny_bert: Path, tmp_path: Path) -> None:
    """`--from-store` reads what `scibert-pack build` actually writes, not only a fake store."""
    from click.testing import CliRunner

    from scibert_pack.archiver.build import build
    from scibert_pack.archiver.settings import BuildSettings
    from scibert_pack.cli import cli

    build(tiny_bert, BuildSettings(name="scibert", version="3"), tmp_path / "store")
    result = CliRunner().invoke(
        cli,
        ["manifest", "--from-store", str(tmp_path / "store"), "--storage-uri", "s3://b/scibert/3/",
         "--no-dockerfile", "--grafana"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    schema = json.loads(STRICT_SCHEMA.read_text())
    assert list(Draft7Validator(schema).iter_errors(isvc)) == []
    assert isvc["metadata"]["name"] == "scibert"
    assert isvc["metadata"]["annotations"]["prometheus.io/port"] == "8082"
