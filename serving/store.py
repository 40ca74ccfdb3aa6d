"""A built model store on disk: OUT/config/config.properties + OUT/model-store/NAME.mar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scibert_pack.config import properties
from scibert_pack.errors import StoreError


@dataclass(frozen=True)
class ModelStore:
    root: Path
    config: dict[str, str]
    model_name: str
    model_version: str
    archive: Path
    batch_size: int
    startup_timeout_s: int
    response_timeout_s: int
    min_workers: int

    @property
    def token_auth(self) -> bool:
        return self.config.get("disable_token_authorization", "false") != "true"

    @property
    def model_store(self) -> Path:
        return self.root / "model-store"


def open_store(root: Path) -> ModelStore:
    """Read and check a store folder; StoreError naming what is missing and how to make it."""
    fix = f"build it with: scibert-pack build MODEL_DIR --name NAME -o {root}"
    config_file = root / "config" / "config.properties"
    if not root.is_dir():
        raise StoreError(f"model store {root} does not exist", fix=fix)
    if not config_file.is_file():
        raise StoreError(f"model store {root} has no config/config.properties", fix=fix)
    config = properties.parse(config_file.read_text(encoding="utf-8"))
    try:
        snapshot = json.loads(config["model_snapshot"])
        ((name, versions),) = snapshot["models"].items()
        version, entry = next(
            ((v, e) for v, e in versions.items() if e.get("defaultVersion")),
            next(iter(versions.items())),
        )
        mar_name = str(entry["marName"])
    except (KeyError, ValueError, TypeError, StopIteration, AttributeError) as err:
        raise StoreError(
            f"config/config.properties in {root} has no usable model_snapshot "
            "(one model with marName, batchSize, ...)",
            fix=fix,
        ) from err
    archive = root / "model-store" / mar_name
    if not archive.exists():
        raise StoreError(
            f"model store {root} has no model-store/{mar_name}, which config.properties serves",
            fix=fix,
        )
    return ModelStore(
        root=root,
        config=config,
        model_name=str(name),
        model_version=str(version),
        archive=archive,
        batch_size=int(entry.get("batchSize", 1)),
        startup_timeout_s=int(entry.get("startupTimeout", 120)),
        response_timeout_s=int(entry.get("responseTimeout", 120)),
        min_workers=int(entry.get("minWorkers", 1)),
    )
