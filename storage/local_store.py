"""The model store folder to upload: checked, listed and hashed once, named by its content."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scibert_pack.errors import StoreError
from scibert_pack.files import file_kind, sha256_file
from scibert_pack.layout import MODEL_STORE_DIR, REPORT_FILE
from scibert_pack.layout import read_store as read_store_facts

# What makes a folder in model-store/ a model (torch-model-archiver --archive-format no-archive).
MODEL_FOLDER_MARKERS = ("MAR-INF/MANIFEST.json", "model-config.yaml")
_BUILD_FIX = (
    "point OUT at the folder `scibert-pack build MODEL_DIR --model-name NAME -o OUT` wrote, or "
    "rebuild it"
)


@dataclass(frozen=True)
class LocalFile:
    # POSIX path relative to the store root; also the key suffix under the version prefix.
    path: str
    source: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class LocalStore:
    root: Path
    files: tuple[LocalFile, ...]
    # sha256 over the sorted (sha256, size, path) lines: equal trees, equal hashes.
    tree_sha256: str
    # The immutable version prefix's name: "<model_version>-<tree hash>" or "<tree hash>".
    version: str
    model_name: str | None
    model_version: str | None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def empty_files(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files if f.size == 0)


def scan_store(root: Path) -> LocalStore:
    """Check and hash the store at `root`; StoreError naming what is missing and how to fix it."""
    if not root.is_dir():
        raise StoreError(f"model store {root} is not a folder", fix=_BUILD_FIX)
    facts = read_store_facts(root, fix=_BUILD_FIX)
    archives, not_models = _archives(root / MODEL_STORE_DIR)
    if not archives:
        looked = "looked for *.mar, *.tar.gz or a model folder holding " + " or ".join(
            MODEL_FOLDER_MARKERS
        )
        if not_models:
            names = ", ".join(f"{p.name}/" for p in not_models)
            looked += f"; {names} {'holds' if len(not_models) == 1 else 'hold'} neither"
        raise StoreError(
            f"model store {root} has no model archive in {MODEL_STORE_DIR}/ ({looked})",
            fix=_BUILD_FIX,
        )
    files = tuple(
        LocalFile(rel, path, path.stat().st_size, sha256_file(path)) for rel, path in _walk(root)
    )
    _check_artifacts(root, facts.artifacts, {f.path: f for f in files})
    lines = "".join(f"{f.sha256} {f.size} {f.path}\n" for f in files)
    tree = hashlib.sha256(lines.encode("utf-8")).hexdigest()
    model_version = facts.model_version
    model_name = facts.model_name or None
    version = tree[:12]
    if model_version:
        version = f"{re.sub(r'[^A-Za-z0-9._-]+', '-', model_version).strip('.-')}-{version}"
    return LocalStore(root, files, tree, version, model_name, model_version)


def _archives(model_store: Path) -> tuple[list[Path], list[Path]]:
    """(model archives, folders that are not models) in `model_store`. A no-archive model is a
    folder torch-model-archiver wrote: it holds MAR-INF/MANIFEST.json (or at least the
    model-config.yaml TorchServe reads); an empty or unrelated folder is no model."""
    if not model_store.is_dir():
        return [], []
    archives: list[Path] = []
    not_models: list[Path] = []
    for p in sorted(model_store.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            is_model = any((p / marker).is_file() for marker in MODEL_FOLDER_MARKERS)
            (archives if is_model else not_models).append(p)
        elif p.name.endswith((".mar", ".tar.gz")) and p.is_file():
            archives.append(p)
    return archives, not_models


def _walk(root: Path) -> list[tuple[str, Path]]:
    """Every regular file under `root`, sorted; hidden names (editor, OS, temp files) are not
    part of a store. A link (to a file or a folder, inside the store or out of it) or a special
    file (FIFO, socket, device) is refused, all of them named, before anything is sent: the
    upload must send exactly the store's own files."""
    found: list[tuple[str, Path]] = []
    refused: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                refused.append(f"{rel} (a link to {os.readlink(path)})")
            elif stat.S_ISREG(mode):
                found.append((rel, path))
            elif not stat.S_ISDIR(mode):
                refused.append(f"{rel} ({file_kind(mode)})")
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    if refused:
        raise StoreError(
            f"model store {root} holds links or special files, which upload does not send: "
            f"{', '.join(sorted(refused))}; nothing was uploaded",
            fix="replace each link with a copy of the file it points to (cp --remove-destination "
            "TARGET LINK), remove special files, or rebuild the store with `scibert-pack build`",
        )
    return sorted(found)


def _check_artifacts(
    root: Path, artifacts: Sequence[Mapping[str, Any]], files: dict[str, LocalFile]
) -> None:
    """A store edited after its build would be served under the build's version name."""
    changed: list[str] = []
    for artifact in artifacts:
        rel = str(artifact.get("path", ""))
        have = files.get(rel)
        if have is None:
            changed.append(f"{rel} (missing)")
        elif have.sha256 != artifact.get("sha256") or have.size != artifact.get("size"):
            changed.append(f"{rel} (sha256 or size differs)")
    if changed:
        raise StoreError(
            f"model store {root} no longer matches its {REPORT_FILE}: {', '.join(changed)}",
            fix="rebuild the store with `scibert-pack build` instead of editing it",
        )
