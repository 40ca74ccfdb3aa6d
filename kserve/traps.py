"""The known ways a KServe + TorchServe manifest looks right and does not work.

Each check returns warnings as data (code, what is wrong, the fix); the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scibert_pack.kserve.deployment_values import DeploymentValues

# Knative refuses a revision timeout above max-revision-timeout-seconds, 600 by default.
KNATIVE_MAX_TIMEOUT = 600
_OLDEST_GOOD_TORCHSERVE = (0, 12)


@dataclass(frozen=True)
class ManifestWarning:
    code: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}; {self.fix}"


def check_traps(r: DeploymentValues) -> list[ManifestWarning]:
    found: list[ManifestWarning] = []
    for check in _CHECKS:
        found.extend(check(r))
    return found


def _batcher_v2(r: DeploymentValues) -> list[ManifestWarning]:
    if r.options.protocol != "v2" or not r.options.has_batcher:
        return []
    return [
        ManifestWarning(
            "batcher-v2",
            "KServe's batcher only batches v1 requests (kserve#2275): with --protocol v2 it "
            "does nothing useful",
            "drop the --batcher-* options and batch in TorchServe instead "
            "(`scibert-pack build --batch-size N --max-batch-delay MS`), or use --protocol v1",
        )
    ]


def _batcher_timeout(r: DeploymentValues) -> list[ManifestWarning]:
    if r.options.batcher_timeout is None:
        return []
    return [
        ManifestWarning(
            "batcher-timeout",
            f"batcher.timeout {r.options.batcher_timeout} is not passed on to the batcher "
            "by KServe, so it has no effect",
            "drop --batcher-timeout; use --timeout for the request timeout and "
            "--batcher-max-latency for how long a batch waits",
        )
    ]


def _stock_image(r: DeploymentValues) -> list[ManifestWarning]:
    if not r.stock:
        return []
    tag = r.runtime_version
    version = _major_minor(tag)
    if (
        version is not None
        and version >= _OLDEST_GOOD_TORCHSERVE
        and tag.startswith(r.torchserve_version)
    ):
        return []
    return [
        ManifestWarning(
            "stock-runtime-image",
            f"runtimeVersion {tag!r} runs pytorch/torchserve-kfs:{tag}, but the archive was "
            f"built for TorchServe {r.torchserve_version} (the runtime's default image is "
            "still 0.9.0)",
            f"use --runtime-version {r.torchserve_version}"
            + ("-gpu" if r.options.gpu else "")
            + " or leave it out",
        )
    ]


def _token_auth_wrapper(r: DeploymentValues) -> list[ManifestWarning]:
    if not (r.stock and r.token_auth):
        return []
    return [
        ManifestWarning(
            "token-auth-wrapper",
            "the model store has TorchServe token authorization on; KServe's wrapper in the "
            "kserve-torchserve image sends no token, so the pod never becomes ready "
            "(pytorch/serve#3301)",
            "rebuild the store without --token-auth, or use --runtime scibert-pack "
            "(it starts TorchServe with --disable-token-auth)",
        )
    ]


def _token_auth_dropped(r: DeploymentValues) -> list[ManifestWarning]:
    if r.stock or not r.token_auth:
        return []
    return [
        ManifestWarning(
            "token-auth-off",
            "the model store was built with --token-auth, but the scibert-pack runtime starts "
            "TorchServe with --disable-token-auth: in the pod every inference and management "
            "call is answered without a key. TorchServe 0.12 makes its keys at start inside "
            "the pod and expires them, so neither KServe's probes nor your clients could "
            "present one",
            "authenticate in front of the pod instead (an ingress or gateway that checks "
            "tokens, e.g. Istio RequestAuthentication with an AuthorizationPolicy) and keep "
            "the pod's other ports in the cluster with a NetworkPolicy; rebuild the store "
            "without --token-auth once that is in place, and this warning goes away",
        )
    ]


def _wrapper_v2_explain(r: DeploymentValues) -> list[ManifestWarning]:
    if not (r.stock and r.options.protocol == "v2"):
        return []
    return [
        ManifestWarning(
            "wrapper-v2-explain",
            "KServe's wrapper in the kserve-torchserve image has no "
            f"/v2/models/{r.model_name}/explain route: v2 explanations return 404",
            "use --runtime scibert-pack (TorchServe answers /v2/.../explain itself), or "
            "--protocol v1 and POST /v1/models/NAME:explain",
        )
    ]


def _url_model_name(r: DeploymentValues) -> list[ManifestWarning]:
    found: list[ManifestWarning] = []
    served = r.store.served_models if r.store else ()
    if served and r.model_name not in served:
        found.append(
            ManifestWarning(
                "model-not-served",
                f"model name {r.model_name!r} is not a key of model_snapshot in the store's "
                f"config.properties (it serves {', '.join(served)}): every request would 404",
                f"use --model-name {served[0]}, or rebuild the store with `scibert-pack build "
                f"--model-name {r.model_name}`",
            )
        )
    if r.model_name != r.options.name:
        found.append(
            ManifestWarning(
                "url-model-name",
                f"the InferenceService is named {r.options.name!r} but TorchServe serves the "
                f"model as {r.model_name!r}: request URLs must say "
                f"/v2/models/{r.model_name}/infer or /v1/models/{r.model_name}:predict",
                "use that name in requests, or give both the same name (--name of "
                "`scibert-pack manifest`, --model-name of `scibert-pack build`)",
            )
        )
    return found


def _storage_slash(r: DeploymentValues) -> list[ManifestWarning]:
    uri = r.options.storage_uri
    if not uri.startswith(("s3://", "gs://")) or uri.endswith("/"):
        return []
    return [
        ManifestWarning(
            "storage-uri-slash",
            f"storageUri {uri!r} has no trailing slash: KServe downloads every object under "
            f"the prefix, so {uri}0/... or {uri}-old/... would be mixed in (kserve#3776)",
            f"use --storage-uri {uri}/",
        )
    ]


def _metrics_port(r: DeploymentValues) -> list[ManifestWarning]:
    if not r.options.prometheus or r.metrics_port == r.server_metrics_port:
        return []
    return [
        ManifestWarning(
            "metrics-port",
            f"Prometheus would scrape port {r.metrics_port}, but config.properties serves "
            f"metrics on {r.server_metrics_port}: scrapes would fail",
            f"use --metrics-port {r.server_metrics_port} or leave it out",
        )
    ]


def _metrics_mode(r: DeploymentValues) -> list[ManifestWarning]:
    if not r.options.prometheus or r.store is None or r.store.metrics_mode == "prometheus":
        return []
    return [
        ManifestWarning(
            "metrics-mode",
            f"config.properties has metrics_mode={r.store.metrics_mode}: /metrics stays empty "
            "and Prometheus scrapes nothing",
            "rebuild the store with `scibert-pack build` (it sets metrics_mode=prometheus)",
        )
    ]


def _loopback(r: DeploymentValues) -> list[ManifestWarning]:
    if r.store is None or not any(h in ("127.0.0.1", "localhost") for h in r.store.bind_hosts):
        return []
    return [
        ManifestWarning(
            "loopback-bind",
            "config.properties binds TorchServe to 127.0.0.1 (the local profile): KServe "
            "cannot reach it inside the pod",
            "rebuild the store with `scibert-pack build --profile kserve`",
        )
    ]


def _knative_timeout(r: DeploymentValues) -> list[ManifestWarning]:
    t = r.options.timeout
    if r.options.autoscaler != "kpa" or t is None or t <= KNATIVE_MAX_TIMEOUT:
        return []
    return [
        ManifestWarning(
            "knative-timeout",
            f"--timeout {t} is above Knative's default max-revision-timeout-seconds "
            f"({KNATIVE_MAX_TIMEOUT}): the revision is rejected unless the cluster raised it",
            f"use --timeout {KNATIVE_MAX_TIMEOUT} or less, or raise max-revision-timeout-seconds "
            "in the config-defaults ConfigMap of knative-serving",
        )
    ]


def _stock_image_libraries(r: DeploymentValues) -> list[ManifestWarning]:
    if not r.stock:
        return []
    return [
        ManifestWarning(
            "stock-runtime-libraries",
            "pytorch/torchserve-kfs images ship torch but not transformers or captum, and the "
            "store's config.properties keeps install_py_dep_per_model=false: the handler cannot "
            "import them and the model never loads",
            "use the default --runtime scibert-pack (its Dockerfile pins transformers=="
            f"{r.transformers_version} and captum=={r.captum_version}), or build an image FROM "
            f"pytorch/torchserve-kfs:{r.runtime_version} with those two installed and set it as "
            "the kserve-torchserve runtime's image",
        )
    ]


def _major_minor(tag: str) -> tuple[int, int] | None:
    parts = tag.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


_CHECKS: tuple[Callable[[DeploymentValues], list[ManifestWarning]], ...] = (
    _stock_image_libraries,
    _batcher_v2,
    _batcher_timeout,
    _stock_image,
    _token_auth_wrapper,
    _token_auth_dropped,
    _wrapper_v2_explain,
    _url_model_name,
    _storage_slash,
    _metrics_port,
    _metrics_mode,
    _loopback,
    _knative_timeout,
)
