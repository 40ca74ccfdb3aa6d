"""The model store layout `scibert-pack build` writes and every other command reads.

OUT/config/config.properties, OUT/model-store/<archive>, OUT/build-report.json. One place for
the names and for reading the two metadata files, so build, serve, upload and manifest agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scibert_pack.config import properties
from scibert_pack.errors import StoreError
from scibert_pack.files import load_json

CONFIG_FILE = "config/config.properties"
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
