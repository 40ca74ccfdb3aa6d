"""Options plus what the model store says (or defaults without one): the values documents use."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

from scibert_pack.kserve.options import STOCK_RUNTIME, ManifestOptions
from scibert_pack.kserve.store_info import DEFAULT_PORTS
from scibert_pack.layout import StoreFacts

TORCHSERVE_VERSION = "0.12.0"
_FALLBACK_VERSIONS = {"transformers": "4.40.0", "captum": "0.7.0", "torch": "2.4.0"}


@dataclass(frozen=True)
class DeploymentValues:
    options: ManifestOptions
    store: StoreFacts | None
    model_name: str
    inference_port: int
    # The port the server really serves metrics on (config.properties), not what was asked.
    server_metrics_port: int
    metrics_port: int
    token_auth: bool
    torchserve_version: str
    transformers_version: str
    captum_version: str
    torch_version: str
    # Python the archive was built (and its libraries resolved) with.
    python_version: str

    @property
    def stock(self) -> bool:
        return self.options.runtime == STOCK_RUNTIME

    @property
    def device(self) -> str:
        return "gpu" if self.options.gpu else "cpu"

    @property
    def runtime_version(self) -> str:
        """Image tag of the stock runtime: pytorch/torchserve-kfs:TAG."""
        if self.options.runtime_version is not None:
            return self.options.runtime_version
        return self.torchserve_version + ("-gpu" if self.options.gpu else "")

    @property
    def image(self) -> str:
        if self.options.image is not None:
            return self.options.image
        return f"scibert-pack-torchserve:{self.torchserve_version}-{self.device}"


def resolve(options: ManifestOptions, store: StoreFacts | None) -> DeploymentValues:
    versions = dict(store.versions) if store else {}
    for dist in ("transformers", "captum", "torch"):
        versions.setdefault(dist, _installed(dist))
    versions.setdefault("python", platform.python_version())
    server_metrics = store.metrics_port if store else DEFAULT_PORTS["metrics"]
    if options.model_name is not None:
        model_name = options.model_name
    else:
        model_name = store.model_name if store else options.name
    return DeploymentValues(
        options=options,
        store=store,
        model_name=model_name,
        inference_port=store.inference_port if store else DEFAULT_PORTS["inference"],
        server_metrics_port=server_metrics,
        metrics_port=options.metrics_port or server_metrics,
        # Without a store, assume the kserve profile's default: token authorization off.
        token_auth=store.token_auth if store else False,
        torchserve_version=versions.get("torchserve", TORCHSERVE_VERSION),
        transformers_version=versions["transformers"],
        captum_version=versions["captum"],
        # A local tag such as +cpu names the wheel index, which the Dockerfile picks itself.
        torch_version=versions["torch"].split("+", 1)[0],
        python_version=versions["python"],
    )


def _installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return _FALLBACK_VERSIONS[dist]
