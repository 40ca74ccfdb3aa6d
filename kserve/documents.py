"""The Kubernetes objects of a deployment, as plain dicts in the order kubectl should see keys."""

from __future__ import annotations

from typing import Any

from scibert_pack.errors import ManifestError
from scibert_pack.kserve.deployment_values import DeploymentValues
from scibert_pack.kserve.options import STOCK_RUNTIME
from scibert_pack.kserve.store_info import DEFAULT_PORTS
from scibert_pack.storage.kubectl_steps import copy_pod_manifest

Document = dict[str, Any]

MODEL_FORMAT = "scibert-pack"
STOCK_MODEL_FORMAT = "pytorch"
# KServe mounts the storageUri here; the store holds config/ and model-store/ (contracts.md).
MODEL_ROOT = "/mnt/models"
CONTAINER_NAME = "kserve-container"
METRICS_PATH = "/metrics"
# TorchServe's health check: 200 while the front end runs. It says Healthy before the model's
# workers have loaded, and while they fail to (seen on 0.12 with `scibert-pack rehearse`), so
# it serves liveness only; readiness asks the management API for a READY worker.
HEALTH_PATH = "/ping"
_READY_CHECK = (
    "import json, sys, urllib.request\n"
    "url = 'http://127.0.0.1:{port}/models/{model}'\n"
    "workers = json.load(urllib.request.urlopen(url, timeout=4))[0]['workers']\n"
    "sys.exit(0 if any(w['status'] == 'READY' for w in workers) else 1)\n"
)
_MANAGED_BY = {"app.kubernetes.io/managed-by": "scibert-pack"}


def metadata(name: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def inference_service(r: DeploymentValues) -> Document:
    o = r.options
    predictor: dict[str, Any] = {}
    for key, value in (
        ("minReplicas", o.min_replicas),
        ("maxReplicas", o.max_replicas),
        ("containerConcurrency", o.container_concurrency),
        ("timeout", o.timeout),
        ("canaryTrafficPercent", o.canary_traffic_percent),
        ("serviceAccountName", o.service_account),
    ):
        if value is not None:
            predictor[key] = value
    if o.autoscaler == "hpa":
        predictor["scaleMetric"] = o.metric
        if o.autoscaling_target is not None:
            predictor["scaleTarget"] = o.autoscaling_target
    if o.has_batcher:
        batcher = {
            key: value
            for key, value in (
                ("maxBatchSize", o.batcher_max_batch_size),
                ("maxLatency", o.batcher_max_latency),
                ("timeout", o.batcher_timeout),
            )
            if value is not None
        }
        predictor["batcher"] = batcher
    predictor["model"] = _model(r)
    labels = {"app.kubernetes.io/name": o.name, **_MANAGED_BY}
    meta = metadata(o.name, o.namespace, labels=labels)
    annotations = _isvc_annotations(r)
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


def _model(r: DeploymentValues) -> dict[str, Any]:
    o = r.options
    model: dict[str, Any]
    if r.stock:
        model = {
            "modelFormat": {"name": STOCK_MODEL_FORMAT},
            "runtime": STOCK_RUNTIME,
            # Without it the runtime runs pytorch/torchserve-kfs:0.9.0.
            "runtimeVersion": r.runtime_version,
        }
    else:
        model = {"modelFormat": {"name": MODEL_FORMAT}, "runtime": o.runtime_name}
    model["protocolVersion"] = o.protocol
    model["storageUri"] = o.storage_uri
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": o.cpu, "memory": o.memory},
        "limits": {"cpu": o.cpu, "memory": o.memory},
    }
    if o.gpu:
        resources["limits"]["nvidia.com/gpu"] = str(o.gpu)
    model["resources"] = resources
    return model


def _isvc_annotations(r: DeploymentValues) -> dict[str, str]:
    o = r.options
    notes: dict[str, str] = {}
    if o.autoscaler == "hpa":
        # HPA is only available in KServe's raw deployment mode.
        notes["serving.kserve.io/deploymentMode"] = "RawDeployment"
        notes["serving.kserve.io/autoscalerClass"] = "hpa"
    elif o.autoscaling_metric is not None or o.autoscaling_target is not None:
        notes["autoscaling.knative.dev/metric"] = o.metric
        if o.autoscaling_target is not None:
            notes["autoscaling.knative.dev/target"] = str(o.autoscaling_target)
    if o.prometheus:
        port = str(r.metrics_port)
        notes["serving.kserve.io/enable-prometheus-scraping"] = "true"
        notes["prometheus.kserve.io/port"] = port
        notes["prometheus.kserve.io/path"] = METRICS_PATH
        notes["prometheus.io/scrape"] = "true"
        notes["prometheus.io/port"] = port
        notes["prometheus.io/path"] = METRICS_PATH
    return notes


def serving_runtime(r: DeploymentValues) -> Document:
    """Our runtime: TorchServe itself on the inference port, no KServe wrapper in between."""
    o = r.options
    port = r.inference_port
    probe = {"httpGet": {"path": HEALTH_PATH, "port": port}, "periodSeconds": 10}
    management = r.store.management_port if r.store else DEFAULT_PORTS["management"]
    ready_check = _READY_CHECK.format(port=management, model=r.model_name)
    container = {
        "name": CONTAINER_NAME,
        "image": r.image,
        "command": ["torchserve"],
        "args": [
            "--start",
            # The container's main process must be the server, not a shell that exits.
            "--foreground",
            f"--model-store={MODEL_ROOT}/model-store",
            f"--ts-config={MODEL_ROOT}/config/config.properties",
            # Keys would live only inside the pod; secure the route with the mesh instead.
            "--disable-token-auth",
            # The store is read-only and the pod is disposable: no config snapshots.
            "--no-config-snapshots",
        ],
        # Read by TorchServe whatever enable_envvars_config says: adds /v2/health/*. No
        # TS_SERVICE_ENVELOPE: the handler speaks v1 and v2 itself.
        "env": [{"name": "TS_OPEN_INFERENCE_PROTOCOL", "value": "oip"}],
        "ports": [{"name": "http1", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            # The image's python (no curl in it); a start of python can take a while on a busy node.
            "exec": {"command": ["python", "-c", ready_check]},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Model loading can take minutes on a cold node: liveness waits longer.
        "livenessProbe": {**probe, "initialDelaySeconds": 120, "failureThreshold": 6},
        "securityContext": {
            # The TorchServe images run as model-server, uid 1000.
            "runAsUser": 1000,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    spec: dict[str, Any] = {}
    if o.prometheus:
        spec["annotations"] = {
            "prometheus.kserve.io/port": str(r.metrics_port),
            "prometheus.kserve.io/path": METRICS_PATH,
        }
    spec.update(
        {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "version": "1", "autoSelect": False}],
            "protocolVersions": ["v1", "v2"],
            "multiModel": False,
            "containers": [container],
        }
    )
    kind = "ClusterServingRuntime" if o.cluster_runtime else "ServingRuntime"
    namespace = None if o.cluster_runtime else o.namespace
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": kind,
        "metadata": metadata(
            o.runtime_name,
            namespace,
            labels=dict(_MANAGED_BY),
            annotations={"serving.kserve.io/server-type": "torchserve"},
        ),
        "spec": spec,
    }


def copy_pod_name(claim: str) -> str:
    return f"{claim}-copy"[:253]


def persistent_volume_claim(r: DeploymentValues) -> Document:
    o = r.options
    claim = _claim(r)
    spec: dict[str, Any] = {
        "accessModes": [o.pvc_access_mode],
        "resources": {"requests": {"storage": o.pvc_size}},
    }
    if o.storage_class is not None:
        spec["storageClassName"] = o.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(claim, o.namespace, labels=dict(_MANAGED_BY)),
        "spec": spec,
    }


def copy_pod(r: DeploymentValues) -> Document:
    """The pod the PVC fill steps exec into (storage.kubectl_steps: one recipe for upload and
    manifest); it only holds the claim mounted."""
    claim = _claim(r)
    return copy_pod_manifest(
        copy_pod_name(claim), claim, namespace=r.options.namespace, labels=dict(_MANAGED_BY)
    )


def _claim(r: DeploymentValues) -> str:
    pvc = r.options.pvc
    if pvc is None:
        raise ManifestError(
            f"PVC documents need a pvc:// storageUri, got {r.options.storage_uri!r}",
            fix="pass --storage-uri pvc://CLAIM/PATH",
        )
    return pvc[0]
