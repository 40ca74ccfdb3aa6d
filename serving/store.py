"""A built model store on disk: OUT/config/config.properties + OUT/model-store/NAME.mar."""

from __future__ import annotations

import os
from pathlib import Path

from scibert_pack.archiver.model_folder import PICKLE, PICKLE_INDEX, SAFETENSORS, SAFETENSORS_INDEX
from scibert_pack.errors import StoreError
from scibert_pack.layout import (
    CONFIG_DIR,
    CONFIG_FILE,
    MODEL_STORE_DIR,
    StoreFacts,
    read_store,
    served_archive,
)

# What save_pretrained writes for the weights, sharded or not, safetensors or pickle.
_WEIGHTS = (SAFETENSORS, SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX)


# What `serve` reads of a store: scibert_pack.layout's one reader.
ModelStore = StoreFacts


def is_model_folder(path: Path) -> bool:
    """A Hugging Face model folder (what `build` takes) rather than a store (what it writes)."""
    return (path / "config.json").is_file() and any((path / w).exists() for w in _WEIGHTS)


def _store_beside(folder: Path) -> Path:
    """Where to suggest building a model folder's store: next to it, never inside it."""
    if folder.name not in ("", ".."):
        return folder.with_name(f"{folder.name}-store")
    real = folder.resolve()
    return Path(os.path.relpath(real.with_name(f"{real.name}-store")))


def _store_around(path: Path) -> Path | None:
    """The store `path` is part of (its model-store/ or config/ folder, or an archive in
    model-store/), when it is one; None otherwise."""
    for part, store in ((path, path.parent), (path.parent, path.parent.parent)):
        if part.name in (MODEL_STORE_DIR, CONFIG_DIR) and (store / CONFIG_FILE).is_file():
            return store
    return None


def _shown(path: Path) -> str:
    text = str(path)
    return text if path.is_absolute() or text.startswith(".") else f"./{text}"


def open_store(root: Path) -> ModelStore:
    """Read and check a store folder; StoreError naming what is missing and how to make it."""
    fix = f"build it with: scibert-pack build MODEL_DIR --model-name NAME -o {root}"
    whole = _store_around(root)
    if whole is not None:
        kind = "the archive" if root.is_file() else f"the {root.name}/ folder"
        raise StoreError(
            f"{_shown(root)} is {kind} inside the model store {_shown(whole)}, not a store",
            fix=f"serve the whole store: scibert-pack serve {_shown(whole)}",
        )
    if root.is_file():
        raise StoreError(
            f"model store {root} is a file, not a folder",
            fix="pass the OUT folder of `scibert-pack build` (it holds config/ and model-store/)",
        )
    if not root.is_dir():
        raise StoreError(f"model store {root} does not exist", fix=fix)
    if is_model_folder(root):
        model, store = _shown(root), _shown(_store_beside(root))
        raise StoreError(
            f"{model} is a model folder (config.json and weights), not a model store built by "
            "scibert-pack",
            fix=f"build it first: scibert-pack build {model} --model-name NAME -o {store}, then "
            f"scibert-pack serve {store}",
        )
    facts = read_store(root, fix=fix)
    served_archive(facts, fix=fix)
    return facts
