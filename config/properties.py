"""TorchServe 0.12 `config.properties`: the server settings and their exact rendering.

Only keys TorchServe 0.12 reads are written (the blog's `metrics_format` has been dead since 0.8),
in a stable order, so two builds of the same inputs give the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

Profile = Literal["local", "kserve"]
PROFILES: tuple[Profile, ...] = ("local", "kserve")
KSERVE_MODEL_STORE = "/mnt/models/model-store"


@dataclass(frozen=True)
class Ports:
    inference: int = 8085
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071

    def as_dict(self) -> dict[str, int]:
        return {
            "inference": self.inference,
            "management": self.management,
            "metrics": self.metrics,
            "grpc_inference": self.grpc_inference,
            "grpc_management": self.grpc_management,
        }


# Where clients look for a server started with `scibert-pack serve` and its default ports.
LOCAL_INFERENCE_URL = f"http://127.0.0.1:{Ports.inference}"


@dataclass(frozen=True)
class ModelEntry:
    """One model version in `model_snapshot`; the name is the one request URLs use."""

    name: str
    version: str
    mar_name: str
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int
    startup_timeout_s: int


@dataclass(frozen=True)
class ServerConfig:
    profile: Profile
    model: ModelEntry
    model_store: str
    # No defaults: BuildSettings holds them, and build passes every value.
    ports: Ports
    token_auth: bool
    netty_threads: int
    job_queue_size: int
    max_request_bytes: int
    max_response_bytes: int = 64 * 1024 * 1024

    @property
    def host(self) -> str:
        # Local builds listen on loopback only; in a pod KServe's network must reach the server.
        return "127.0.0.1" if self.profile == "local" else "0.0.0.0"

    def model_snapshot(self) -> dict[str, object]:
        m = self.model
        version = {
            "defaultVersion": True,
            "marName": m.mar_name,
            "minWorkers": m.min_workers,
            "maxWorkers": m.max_workers,
            "batchSize": m.batch_size,
            "maxBatchDelay": m.max_batch_delay_ms,
            "responseTimeout": m.response_timeout_s,
            "startupTimeout": m.startup_timeout_s,
        }
        return {"name": "startup.cfg", "modelCount": 1, "models": {m.name: {m.version: version}}}


def addresses(host: str, ports: Ports) -> dict[str, str]:
    """The config.properties keys that say where TorchServe listens, in the order it logs them."""
    url_host = f"[{host}]" if ":" in host else host
    return {
        "inference_address": f"http://{url_host}:{ports.inference}",
        "management_address": f"http://{url_host}:{ports.management}",
        "metrics_address": f"http://{url_host}:{ports.metrics}",
        "grpc_inference_address": host,
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_address": host,
        "grpc_management_port": str(ports.grpc_management),
    }


def render(config: ServerConfig, *, generator: str) -> str:
    """The config.properties text, keys in a fixed order, with comments that say why."""
    host, ports = config.host, config.ports
    allowed = f"file://{config.model_store.rstrip('/')}/.*"
    lines = [
        f"# Written by {generator} (profile: {config.profile}) for TorchServe 0.12.",
        *(f"{key}={value}" for key, value in addresses(host, ports).items()),
        "enable_metrics_api=true",
        "metrics_mode=prometheus",
        "model_metrics_auto_detect=true",
        f"number_of_netty_threads={config.netty_threads}",
        f"job_queue_size={config.job_queue_size}",
        f"max_request_size={config.max_request_bytes}",
        f"max_response_size={config.max_response_bytes}",
        f"model_store={config.model_store}",
        f"model_snapshot={json.dumps(config.model_snapshot(), separators=(',', ':'))}",
        "# No service_envelope: the handler speaks KServe v1/v2 itself. TorchServe's",
        "# kservev2 envelope answers only the first request of a batch (pytorch/serve#2158)",
        "# and KServe sets TS_SERVICE_ENVELOPE=kservev2, so environment overrides stay off.",
        "enable_envvars_config=false",
        "ts_open_inference_protocol=true",
        "install_py_dep_per_model=false",
        "# Models come only from this store: no registration through the management API.",
        "enable_model_api=false",
        f"allowed_urls={allowed}",
    ]
    if config.token_auth:
        lines += [
            "# Token authorization on: TorchServe writes key_file.json in its working directory.",
            "disable_token_authorization=false",
        ]
    else:
        why = (
            "KServe's wrapper cannot send a token"
            if config.profile == "kserve"
            else "this server listens on loopback only"
        )
        lines += [
            f"# Token authorization off: {why}; build with --token-auth to turn it on.",
            "disable_token_authorization=true",
        ]
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, str]:
    """key=value pairs of a config.properties text (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values
