"""A built model store on disk: OUT/config/config.properties + OUT/model-store/NAME.mar."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scibert_pack.archiver.model_folder import PICKLE, PICKLE_INDEX, SAFETENSORS, SAFETENSORS_INDEX
from scibert_pack.errors import StoreError
from scibert_pack.layout import CONFIG_FILE, MODEL_STORE_DIR, read_config, snapshot_models

# What save_pretrained writes for the weights, sharded or not, safetensors or pickle.
_WEIGHTS = (SAFETENSORS, SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX)


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
        return self.root / MODEL_STORE_DIR


def is_model_folder(path: Path) -> bool:
    """A Hugging Face model folder (what `build` takes) rather than a store (what it writes)."""
    return (path / "config.json").is_file() and any((path / w).exists() for w in _WEIGHTS)


def _store_beside(folder: Path) -> Path:
    """Where to suggest building a model folder's store: next to it, never inside it."""
    if folder.name not in ("", ".."):
        return folder.with_name(f"{folder.name}-store")
    real = folder.resolve()
    return Path(os.path.relpath(real.with_name(f"{real.name}-store")))


def _shown(path: Path) -> str:
    text = str(path)
    return text if path.is_absolute() or text.startswith(".") else f"./{text}"


def open_store(root: Path) -> ModelStore:
    """Read and check a store folder; StoreError naming what is missing and how to make it."""
    fix = f"build it with: scibert-pack build MODEL_DIR --name NAME -o {root}"
    if not root.is_dir():
        raise StoreError(f"model store {root} does not exist", fix=fix)
    if is_model_folder(root):
        model, store = _shown(root), _shown(_store_beside(root))
        raise StoreError(
            f"{model} is a model folder (config.json and weights), not a model store built by "
            "scibert-pack",
            fix=f"build it first: scibert-pack build {model} --name NAME -o {store}, then "
            f"scibert-pack serve {store}",
        )
    config = read_config(root, fix=fix)
    models = snapshot_models(config, root)
    if len(models) != 1:
        raise StoreError(
            f"{CONFIG_FILE} in {root} must serve exactly one model in model_snapshot, "
            f"found {len(models)}",
            fix=fix,
        )
    ((name, versions),) = models.items()
    defaults = [v for v, e in versions.items() if e.get("defaultVersion")]
    version = defaults[0] if defaults else next(iter(versions), "")
    entry = versions.get(version, {})
    if "marName" not in entry:
        raise StoreError(f"model_snapshot in {root / CONFIG_FILE} has no marName", fix=fix)
    mar_name = str(entry["marName"])
    archive = root / MODEL_STORE_DIR / mar_name
    if not archive.exists():
        raise StoreError(
            f"model store {root} has no {MODEL_STORE_DIR}/{mar_name}, which "
            "config.properties serves",
            fix=fix,
        )
    return ModelStore(
        root=root,
        config=config,
        model_name=name,
        model_version=version,
        archive=archive,
        batch_size=int(entry.get("batchSize", 1)),
        startup_timeout_s=int(entry.get("startupTimeout", 120)),
        response_timeout_s=int(entry.get("responseTimeout", 120)),
        min_workers=int(entry.get("minWorkers", 1)),
    )
