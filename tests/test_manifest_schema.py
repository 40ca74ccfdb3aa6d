"""Every option combination gives InferenceService YAML that KServe's strict CRD schema accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from support.manifest_store import COMBINATIONS

from scibert_pack.kserve.manifest import build_manifest
from scibert_pack.kserve.options import ManifestOptions

# KServe v0.20.0's CRD schema, carried by the repository (tests/data/kserve/SOURCE.md).
KSERVE_DATA = Path(__file__).parent / "data" / "kserve"
STRICT_SCHEMA = KSERVE_DATA / "inferenceservice.v1beta1.strict.schema.json"
BASE = {"name": "scibert", "storage_uri": "s3://models/scibert/v1/"}


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
