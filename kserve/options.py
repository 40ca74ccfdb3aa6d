"""What the user asks of a manifest, validated once: names, ranges and combinations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scibert_pack.errors import InputError
from scibert_pack.kserve.names import (
    check_image,
    check_image_tag,
    check_isvc_name,
    check_label_name,
    check_model_name,
    check_object_name,
    check_quantity,
)
from scibert_pack.storage.targets import check_storage_uri, redact_uri

# The ranges of the numeric options, keyed by the InferenceService field each one becomes: the
# options are checked against them, and kserve/invariants.py checks the written YAML.
PREDICTOR_RANGES: dict[str, tuple[int, int]] = {
    "minReplicas": (0, 1000),
    "maxReplicas": (1, 1000),
    "containerConcurrency": (0, 1000),
    "timeout": (1, 86_400),
    "canaryTrafficPercent": (0, 100),
    "scaleTarget": (1, 100_000),
}
BATCHER_RANGES: dict[str, tuple[int, int]] = {
    "maxBatchSize": (1, 4096),
    "maxLatency": (1, 600_000),
    "timeout": (1, 86_400),
}

Protocol = Literal["v1", "v2"]
Runtime = Literal["scibert-pack", "kserve-torchserve"]
Autoscaler = Literal["kpa", "hpa"]
Metric = Literal["concurrency", "rps", "cpu", "memory"]
Only = Literal["all", "storage", "serving"]
AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]

PROTOCOLS: tuple[Protocol, ...] = ("v1", "v2")
RUNTIMES: tuple[Runtime, ...] = ("scibert-pack", "kserve-torchserve")
AUTOSCALERS: tuple[Autoscaler, ...] = ("kpa", "hpa")
METRICS: tuple[Metric, ...] = ("concurrency", "rps", "cpu", "memory")
ONLY: tuple[Only, ...] = ("all", "storage", "serving")
ACCESS_MODES: tuple[AccessMode, ...] = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany")
# Knative's autoscaler (KPA) scales on request load, Kubernetes' HPA on resource use.
METRICS_BY_AUTOSCALER: dict[Autoscaler, tuple[Metric, ...]] = {
    "kpa": ("concurrency", "rps"),
    "hpa": ("cpu", "memory"),
}
STORAGE_SCHEMES = ("s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs")
STOCK_RUNTIME = "kserve-torchserve"
DEFAULT_RUNTIME_NAME = "scibert-pack-torchserve"


@dataclass(frozen=True)
class ManifestOptions:
    name: str
    storage_uri: str
    namespace: str | None = None
    # The name in request URLs; None means the store's model name, else the InferenceService name.
    model_name: str | None = None
    protocol: Protocol = "v2"
    runtime: Runtime = "scibert-pack"
    runtime_name: str = DEFAULT_RUNTIME_NAME
    cluster_runtime: bool = False
    # Stock runtime image tag (pytorch/torchserve-kfs:TAG); None: from the TorchServe version.
    runtime_version: str | None = None
    # Image of our runtime; None: scibert-pack-torchserve:<torchserve version>-<cpu|gpu>.
    image: str | None = None
    timeout: int | None = None
    batcher_max_batch_size: int | None = None
    batcher_max_latency: int | None = None
    batcher_timeout: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    container_concurrency: int | None = None
    autoscaling_target: int | None = None
    autoscaler: Autoscaler = "kpa"
    autoscaling_metric: Metric | None = None
    cpu: str = "2"
    memory: str = "4Gi"
    gpu: int = 0
    canary_traffic_percent: int | None = None
    service_account: str | None = None
    prometheus: bool = True
    # None: the store's metrics port (Ports.metrics without a store).
    metrics_port: int | None = None
    grafana: bool = False
    only: Only = "all"
    pvc_size: str = "5Gi"
    pvc_access_mode: AccessMode = "ReadWriteOnce"
    storage_class: str | None = None

    def __post_init__(self) -> None:
        check_isvc_name(self.name)
        _check_storage_uri(self.storage_uri)
        if self.namespace is not None:
            check_label_name(self.namespace, "namespace")
        if self.model_name is not None:
            check_model_name(self.model_name)
        _choice("--protocol", self.protocol, PROTOCOLS)
        _choice("--runtime", self.runtime, RUNTIMES)
        _choice("--autoscaler", self.autoscaler, AUTOSCALERS)
        _choice("--only", self.only, ONLY)
        _choice("--pvc-access-mode", self.pvc_access_mode, ACCESS_MODES)
        check_object_name(self.runtime_name, "runtime name")
        if self.image is not None:
            check_image(self.image)
        if self.runtime_version is not None:
            check_image_tag(self.runtime_version, "--runtime-version")
        if self.service_account is not None:
            check_object_name(self.service_account, "service account")
        if self.storage_class is not None:
            check_object_name(self.storage_class, "storage class")
        check_quantity(self.cpu, "--cpu", "'2' or '500m'")
        check_quantity(self.memory, "--memory", "'4Gi'")
        check_quantity(self.pvc_size, "--pvc-size", "'5Gi'")
        p, b = PREDICTOR_RANGES, BATCHER_RANGES
        _range("--timeout", self.timeout, *p["timeout"])
        _range("--batcher-max-batch-size", self.batcher_max_batch_size, *b["maxBatchSize"])
        _range("--batcher-max-latency", self.batcher_max_latency, *b["maxLatency"])
        _range("--batcher-timeout", self.batcher_timeout, *b["timeout"])
        _range("--min-replicas", self.min_replicas, *p["minReplicas"])
        _range("--max-replicas", self.max_replicas, *p["maxReplicas"])
        _range("--container-concurrency", self.container_concurrency, *p["containerConcurrency"])
        _range("--autoscaling-target", self.autoscaling_target, *p["scaleTarget"])
        _range("--gpu", self.gpu, 0, 16)
        _range("--canary-traffic-percent", self.canary_traffic_percent, *p["canaryTrafficPercent"])
        _range("--metrics-port", self.metrics_port, 1, 65_535)
        if self.runtime == STOCK_RUNTIME and (self.image is not None or self.cluster_runtime):
            raise InputError(
                "--image and --cluster-runtime describe our ServingRuntime, "
                f"not the stock {STOCK_RUNTIME!r}",
                fix="drop them, or use --runtime scibert-pack",
            )
        if self.runtime != STOCK_RUNTIME and self.runtime_version is not None:
            raise InputError(
                "--runtime-version picks the image of the stock runtime, "
                f"got {self.runtime_version!r} with --runtime {self.runtime}",
                fix="use --image for our runtime, or --runtime kserve-torchserve",
            )
        if self.only == "storage" and self.pvc is None:
            raise InputError(
                f"--only storage writes the PVC documents, but --storage-uri {self.storage_uri!r} "
                "is not a pvc:// URI",
                fix="use --storage-uri pvc://CLAIM/PATH, or drop --only storage",
            )
        if self.pvc is not None and not self.pvc[1] and self.only != "serving":
            claim = self.pvc[0]
            raise InputError(
                f"--storage-uri {self.storage_uri!r} is the root of claim {claim!r}: a store "
                "copied there cannot be renamed into place in one step, so the "
                "InferenceService could start on a half-copied store",
                fix=f"serve a folder of the claim, e.g. --storage-uri pvc://{claim}/scibert "
                "(`scibert-pack upload OUT pvc://CLAIM/PATH` prints one), or pass --only "
                "serving for a claim that is filled already",
            )
        self._check_scaling()

    @property
    def metric(self) -> Metric:
        return self.autoscaling_metric or METRICS_BY_AUTOSCALER[self.autoscaler][0]

    @property
    def has_batcher(self) -> bool:
        batcher = (self.batcher_max_batch_size, self.batcher_max_latency, self.batcher_timeout)
        return any(value is not None for value in batcher)

    @property
    def pvc(self) -> tuple[str, str] | None:
        """(claim, path inside the claim) for a pvc:// storageUri."""
        if not self.storage_uri.startswith("pvc://"):
            return None
        claim, _, path = self.storage_uri[len("pvc://") :].partition("/")
        return claim, path.strip("/")

    def _check_scaling(self) -> None:
        allowed = METRICS_BY_AUTOSCALER[self.autoscaler]
        if self.autoscaling_metric is not None and self.autoscaling_metric not in allowed:
            raise InputError(
                f"--autoscaling-metric {self.autoscaling_metric} does not work with "
                f"--autoscaler {self.autoscaler}, which scales on {' or '.join(allowed)}",
                fix=("use --autoscaler hpa for cpu/memory, --autoscaler kpa for concurrency/rps"),
            )
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise InputError(
                f"--min-replicas {low} is above --max-replicas {high}",
                fix="raise --max-replicas or lower --min-replicas",
            )
        if self.autoscaler == "hpa":
            # HPA needs KServe's raw deployment mode, which has none of Knative's features.
            knative_only = [
                flag
                for flag, used in (
                    ("--min-replicas 0", self.min_replicas == 0),
                    ("--container-concurrency", self.container_concurrency is not None),
                    ("--canary-traffic-percent", self.canary_traffic_percent is not None),
                )
                if used
            ]
            if knative_only:
                raise InputError(
                    f"{', '.join(knative_only)} needs Knative (--autoscaler kpa); --autoscaler "
                    "hpa runs KServe in raw deployment mode, which cannot scale to zero, limit "
                    "concurrency or split canary traffic",
                    fix=f"drop {knative_only[0].split()[0]} or use --autoscaler kpa",
                )
        target, limit = self.autoscaling_target, self.container_concurrency
        if self.metric == "concurrency" and target and limit and target > limit:
            suggested = max(1, limit * 7 // 10)
            raise InputError(
                f"--autoscaling-target {target} (soft limit) is above "
                f"--container-concurrency {limit} (hard limit): the target can never be reached",
                fix=f"use an --autoscaling-target of at most {limit}, e.g. {suggested}",
            )
        if self.autoscaler == "hpa" and self.metric in ("cpu", "memory") and target:
            _range("--autoscaling-target (percent of the request)", target, 1, 100)


def _check_storage_uri(uri: str) -> None:
    """The validator `upload` uses too (storage.targets), with KServe's schemes."""
    if "://" not in uri:
        raise InputError(
            f"--storage-uri {redact_uri(uri)!r} is not a storage URI KServe can fetch",
            fix=(
                "give the model store's location, e.g. s3://bucket/scibert/v1/ or "
                "pvc://claim/scibert/v1/"
            ),
        )
    check_storage_uri(
        uri,
        schemes=STORAGE_SCHEMES,
        label="--storage-uri ",
        credentials_fix="remove them and give the predictor the credentials through "
        "--service-account (a ServiceAccount with KServe's S3 secret annotations)",
    )


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{flag} {value!r} is not one of {', '.join(choices)}")


def _range(flag: str, value: int | None, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(
            f"{flag} must be an integer from {low} to {high}, got {value!r}",
            fix=f"pass a value between {low} and {high}",
        )
