"""The command's own check of every document before it is printed.

The CRD schema is 1.7 MB and is not shipped; instead each document is held to the rules this
tool relies on: known keys only (a typo would be dropped by the API server without a word),
string annotation and label values, names and ranges as Kubernetes and KServe want them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

from scibert_pack.errors import ManifestError
from scibert_pack.kserve.names import (
    check_isvc_name,
    check_label_name,
    check_object_name,
    check_quantity,
)
from scibert_pack.kserve.options import BATCHER_RANGES, PREDICTOR_RANGES

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_PREDICTOR_OTHER = {"serviceAccountName", "scaleMetric", "batcher", "model"}
_MODEL_KEYS = {
    "modelFormat",
    "runtime",
    "runtimeVersion",
    "protocolVersion",
    "storageUri",
    "resources",
}
_METADATA_KEYS = {"name", "namespace", "labels", "annotations"}


def check_document(doc: Mapping[str, Any]) -> None:
    """Raise ManifestError naming the field when a generated document breaks a rule."""
    kind = doc.get("kind")
    _no_nulls(doc, kind or "document")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(doc.get("apiVersion"), str):
        _fail(f"{kind}: apiVersion and metadata are required")
    _check_metadata(str(kind), meta)
    if kind == "InferenceService":
        check_isvc_name(meta["name"])
        _check_isvc(doc)
    elif kind in ("ServingRuntime", "ClusterServingRuntime"):
        _check_runtime(doc)


def _check_metadata(kind: str, meta: Mapping[str, Any]) -> None:
    unknown = set(meta) - _METADATA_KEYS
    if unknown:
        _fail(f"{kind}.metadata has unknown keys {sorted(unknown)}")
    check_object_name(meta["name"], f"{kind} name")
    if "namespace" in meta:
        check_label_name(meta["namespace"], "namespace")
    for key, value in meta.get("labels", {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            _fail(f"{kind}.metadata.labels[{key}] = {value!r} is not a valid label value")
    for key, value in meta.get("annotations", {}).items():
        if not isinstance(value, str):
            _fail(f"{kind}.metadata.annotations[{key}] = {value!r} must be a string")


def _check_isvc(doc: Mapping[str, Any]) -> None:
    if set(doc) != {"apiVersion", "kind", "metadata", "spec"} or set(doc["spec"]) != {"predictor"}:
        _fail("InferenceService must hold apiVersion, kind, metadata and spec.predictor only")
    predictor = doc["spec"]["predictor"]
    unknown = set(predictor) - set(PREDICTOR_RANGES) - _PREDICTOR_OTHER
    if unknown:
        _fail(f"spec.predictor has unknown keys {sorted(unknown)}")
    for key, (low, high) in PREDICTOR_RANGES.items():
        if key in predictor:
            _int_in(f"spec.predictor.{key}", predictor[key], low, high)
    batcher = predictor.get("batcher", {})
    if set(batcher) - set(BATCHER_RANGES):
        _fail(
            f"spec.predictor.batcher has unknown keys {sorted(set(batcher) - set(BATCHER_RANGES))}"
        )
    for key, value in batcher.items():
        _int_in(f"spec.predictor.batcher.{key}", value, *BATCHER_RANGES[key])
    model = predictor.get("model")
    if not isinstance(model, Mapping) or set(model) - _MODEL_KEYS:
        _fail(f"spec.predictor.model must be a mapping of {sorted(_MODEL_KEYS)}")
    if not isinstance(model.get("modelFormat"), Mapping) or "name" not in model["modelFormat"]:
        _fail("spec.predictor.model.modelFormat.name is required")
    if model.get("protocolVersion") not in ("v1", "v2"):
        _fail(f"spec.predictor.model.protocolVersion {model.get('protocolVersion')!r}")
    _check_resources(model.get("resources", {}), "spec.predictor.model.resources")


def _check_runtime(doc: Mapping[str, Any]) -> None:
    containers = doc["spec"]["containers"]
    if len(containers) != 1:
        _fail("the ServingRuntime must have exactly one container")
    container = containers[0]
    # Knative serves one port and probes only that one.
    port = container["ports"][0]["containerPort"]
    for probe in ("readinessProbe", "livenessProbe"):
        if "httpGet" in container[probe] and container[probe]["httpGet"]["port"] != port:
            _fail(f"{probe} port differs from the container port {port}")
    if any(env["name"] == "TS_SERVICE_ENVELOPE" for env in container.get("env", [])):
        _fail("our runtime must not set TS_SERVICE_ENVELOPE: the handler speaks v1/v2 itself")


def _check_resources(resources: Mapping[str, Any], where: str) -> None:
    for section in ("requests", "limits"):
        for key, value in resources.get(section, {}).items():
            if not isinstance(value, str):
                _fail(f"{where}.{section}[{key}] = {value!r} must be a quantity string")
            check_quantity(value, f"{where}.{section}[{key}]", "'1'")


def _int_in(where: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(f"{where} = {value!r} must be an integer from {low} to {high}")


def _no_nulls(node: object, where: str) -> None:
    if node is None:
        _fail(f"{where} is null")
    if isinstance(node, Mapping):
        for key, value in node.items():
            _no_nulls(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _no_nulls(value, f"{where}[{index}]")


def _fail(message: str) -> NoReturn:
    raise ManifestError(
        f"generated manifest breaks its own rules: {message}",
        fix="this is a scibert-pack bug; please report it with the command line used",
    )
