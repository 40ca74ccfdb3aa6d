"""The model store layout `scibert-pack build` writes and every other command reads.

OUT/config/config.properties, OUT/model-store/<archive>, OUT/build-report.json. One place for
the names and for reading the two metadata files, so build, serve, upload and manifest agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scibert_pack.config import properties
from scibert_pack.config.properties import Ports
from scibert_pack.errors import StoreError
from scibert_pack.files import load_json

CONFIG_DIR = "config"
CONFIG_FILE = f"{CONFIG_DIR}/config.properties"
MODEL_STORE_DIR = "model-store"
REPORT_FILE = "build-report.json"
REPORT_SCHEMA = "scibert-pack/build-report/v1"
REBUILD = "rebuild the store with `scibert-pack build`"


def read_config(root: Path, *, fix: str) -> dict[str, str]:
    """The store's config.properties as key/value pairs; StoreError with `fix` when absent."""
    path = root / CONFIG_FILE
    try:
        return properties.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"model store {root} has no {CONFIG_FILE}", fix=fix) from None
    except (OSError, UnicodeDecodeError) as err:
        raise StoreError(f"{path} is not readable ({err})", fix=REBUILD) from None


def read_report(root: Path, *, required: bool, fix: str) -> dict[str, Any] | None:
    """build-report.json, checked for its schema; None when absent and not `required`."""
    path = root / REPORT_FILE
    try:
        report = load_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not required:
            return None
        raise StoreError(f"model store {root} has no {REPORT_FILE}", fix=fix) from None
    except (OSError, ValueError) as err:  # ValueError: bad UTF-8 or JSON, too deep
        raise StoreError(f"{path} is not readable JSON ({err})", fix=fix) from None
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        got = report.get("schema") if isinstance(report, dict) else type(report).__name__
        raise StoreError(
            f"{path} has schema {got!r}, expected {REPORT_SCHEMA!r}",
            fix="rebuild the store with this version of `scibert-pack build`",
        )
    return report


def snapshot_models(config: dict[str, str], root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """model_snapshot's models: {name: {version: settings}}; {} when there is no snapshot."""
    raw = config.get("model_snapshot")
    if raw is None:
        return {}
    try:
        models = load_json(raw)["models"]
        if not isinstance(models, dict) or not all(
            isinstance(v, dict) and all(isinstance(e, dict) for e in v.values())
            for v in models.values()
        ):
            raise TypeError("models is not an object of versions")
    except (ValueError, KeyError, TypeError) as err:
        raise StoreError(
            f"model_snapshot in {root / CONFIG_FILE} is not a TorchServe snapshot ({err})",
            fix=REBUILD,
        ) from None
    return {str(name): versions for name, versions in models.items()}


@dataclass(frozen=True)
class StoreFacts:
    """What a built store says about itself, read once for serve, upload and manifest.

    From OUT/config/config.properties and OUT/build-report.json; config.properties wins where both
    say something, because it is what TorchServe reads.
    """

    root: Path
    # config.properties as key/value pairs (serve writes a runtime copy of it).
    config: dict[str, str]
    # The model TorchServe serves (the one model_snapshot names, else the report's), "" if none.
    model_name: str
    # Keys under model_snapshot.models: the only names TorchServe answers to in URLs.
    served_models: tuple[str, ...]
    # From the report (`build --version`); None when the store has no report.
    model_version: str | None
    # model_snapshot's entry of the served model's default version (marName, minWorkers, ...).
    snapshot_entry: Mapping[str, Any]
    token_auth: bool
    inference_port: int
    management_port: int
    metrics_port: int
    # Hosts the server binds; 127.0.0.1 (the local profile) is unreachable from outside the pod.
    bind_hosts: tuple[str, ...]
    metrics_mode: str
    # The report's tool versions, and its artifacts (path, size, sha256) as built.
    versions: Mapping[str, str]
    artifacts: tuple[Mapping[str, Any], ...]

    @property
    def model_store(self) -> Path:
        return self.root / MODEL_STORE_DIR

    @property
    def startup_timeout_s(self) -> int:
        return int(self.snapshot_entry.get("startupTimeout", 120))

    @property
    def min_workers(self) -> int:
        return int(self.snapshot_entry.get("minWorkers", 1))


def read_store(root: Path, *, fix: str, report_required: bool = False) -> StoreFacts:
    """The facts of the store at `root`; StoreError with `fix` when a file is missing."""
    config = read_config(root, fix=fix)
    report = read_report(root, required=report_required, fix=fix) or {}
    models = snapshot_models(config, root)
    served = tuple(models)
    if len(models) == 1:
        model_name = served[0]
    else:
        model_name = str(report.get("model_name") or (served[0] if served else ""))
    versions = models.get(model_name, {})
    defaults = [v for v, entry in versions.items() if entry.get("defaultVersion")]
    default = defaults[0] if defaults else next(iter(versions), "")
    ports = report.get("ports") or {}
    inference_port, inference_host = _address(config, "inference_address", ports, "inference")
    metrics_port, metrics_host = _address(config, "metrics_address", ports, "metrics")
    management_port, _ = _address(config, "management_address", ports, "management")
    if "disable_token_authorization" in config:
        token_auth = config["disable_token_authorization"].lower() != "true"
    else:
        # TorchServe 0.12 turns token authorization on unless told otherwise.
        token_auth = bool(report.get("token_auth", True))
    version = report.get("model_version")
    return StoreFacts(
        root=root,
        config=config,
        model_name=model_name,
        served_models=served,
        model_version=str(version) if version is not None else None,
        snapshot_entry=versions.get(default, {}),
        token_auth=token_auth,
        inference_port=inference_port,
        management_port=management_port,
        metrics_port=metrics_port,
        bind_hosts=tuple(h for h in (inference_host, metrics_host) if h),
        metrics_mode=config.get("metrics_mode", "log"),
        versions={str(k): str(v) for k, v in (report.get("versions") or {}).items()},
        artifacts=tuple(a for a in report.get("artifacts") or [] if isinstance(a, Mapping)),
    )


def _address(
    config: Mapping[str, str], key: str, ports: Mapping[str, Any], port_key: str
) -> tuple[int, str]:
    """(port, host) of an address config.properties gives, else the report's port."""
    value = config.get(key)
    if value:
        split = urlsplit(value)
        try:
            port = split.port
        except ValueError:
            port = None
        if port is not None:
            return port, split.hostname or ""
    return int(ports.get(port_key, Ports().as_dict()[port_key])), ""


def served_archive(facts: StoreFacts, *, fix: str) -> Path:
    """The archive (or no-archive folder) config.properties serves, checked to exist in
    model-store/; StoreError with `fix` otherwise. An edited config.properties (the blog's,
    say) can name an archive the store does not hold."""
    root = facts.root
    if len(facts.served_models) != 1:
        raise StoreError(
            f"{CONFIG_FILE} in {root} must serve exactly one model in model_snapshot, "
            f"found {len(facts.served_models)}",
            fix=fix,
        )
    if "marName" not in facts.snapshot_entry:
        raise StoreError(f"model_snapshot in {root / CONFIG_FILE} has no marName", fix=fix)
    mar_name = str(facts.snapshot_entry["marName"])
    archive = facts.model_store / mar_name
    if not archive.exists():
        raise StoreError(
            f"model store {root} has no {MODEL_STORE_DIR}/{mar_name}, which "
            "config.properties serves",
            fix=fix,
        )
    return archive
