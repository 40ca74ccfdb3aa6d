"""What a manifest needs from a built model store: names, ports, token auth, versions.

Read from OUT/build-report.json and OUT/config/config.properties; config.properties wins where
both say something, because it is what TorchServe reads in the pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scibert_pack.config.properties import Ports
from scibert_pack.errors import StoreError
from scibert_pack.layout import CONFIG_FILE, REPORT_FILE, read_config, read_report, snapshot_models

_FROM_STORE_FIX = "point --from-store at the OUT folder of `scibert-pack build`, or rebuild it"
DEFAULT_PORTS = Ports().as_dict()


@dataclass(frozen=True)
class StoreInfo:
    model_name: str
    # Keys under model_snapshot.models: the only names TorchServe answers to in URLs.
    served_models: tuple[str, ...]
    inference_port: int
    metrics_port: int
    # Hosts the server binds; 127.0.0.1 (the local profile) is unreachable from outside the pod.
    bind_hosts: tuple[str, ...]
    token_auth: bool
    metrics_mode: str
    versions: dict[str, str]
    path: Path | None = None


def read_store(out: Path) -> StoreInfo:
    """The facts of the model store at `out`; StoreError when a file is missing or unreadable."""
    report = read_report(out, required=True, fix=_FROM_STORE_FIX) or {}
    props = read_config(out, fix=_FROM_STORE_FIX)
    served = tuple(snapshot_models(props, out))
    ports = report.get("ports") or {}
    inference_port, inference_host = _address(props, "inference_address", ports, "inference")
    metrics_port, metrics_host = _address(props, "metrics_address", ports, "metrics")
    if "disable_token_authorization" in props:
        token_auth = props["disable_token_authorization"].lower() != "true"
    else:
        # TorchServe 0.12 turns token authorization on unless told otherwise.
        token_auth = bool(report.get("token_auth", True))
    versions = {str(k): str(v) for k, v in (report.get("versions") or {}).items()}
    model_name = str(report.get("model_name") or (served[0] if served else ""))
    if not model_name:
        raise StoreError(
            f"model store {out} names no model (no model_name in {REPORT_FILE}, "
            f"no model_snapshot in {CONFIG_FILE})",
            fix="rebuild the store with `scibert-pack build`",
        )
    return StoreInfo(
        model_name=model_name,
        served_models=served,
        inference_port=inference_port,
        metrics_port=metrics_port,
        bind_hosts=tuple(h for h in (inference_host, metrics_host) if h),
        token_auth=token_auth,
        metrics_mode=props.get("metrics_mode", "log"),
        versions=versions,
        path=out,
    )


def _address(
    props: dict[str, str], key: str, ports: dict[str, Any], port_key: str
) -> tuple[int, str]:
    value = props.get(key)
    if value:
        split = urlsplit(value)
        try:
            port = split.port
        except ValueError:
            port = None
        if port is not None:
            return port, split.hostname or ""
    return int(ports.get(port_key, DEFAULT_PORTS[port_key])), ""
