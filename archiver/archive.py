"""Packs a staged model directory into a TorchServe archive, reproducibly.

torch-model-archiver's Python API does what it owns: it validates the inputs, generates
MAR-INF/MANIFEST.json (`ModelExportUtils.generate_manifest_json`) and lays out the no-archive
folder. The final zip / tgz packing is ours, because the archiver's (`ModelExportUtils.archive`)
cannot give the same bytes twice on different machines: it walks the staging folder in the
filesystem's order (ext4 and tmpfs list files differently), records each file's mtime and
permission bits (which follow the umask), stamps MANIFEST.json with the current time, and in a
tgz records the builder's uid, gid, user and group names. Ours writes the archiver's layout
(regular files only, MAR-INF/MANIFEST.json, tgz entries under NAME/), which TorchServe 0.12
loads, from a sorted file list with one fixed time, mode 0644 and owner 0/0 without names.

We also stage in a private directory: the archiver stages in `tempfile.gettempdir()/<name>`,
so parallel builds of one name clobber each other.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from model_archiver.model_archiver_config import ModelArchiverConfig
from model_archiver.model_archiver_error import ModelArchiverError
from model_archiver.model_packaging_utils import (
    MANIFEST_FILE_NAME,
    MAR_INF,
    ModelExportUtils,
)

from scibert_pack.archiver.settings import ArchiveFormat
from scibert_pack.errors import BuildError

# 2020-01-01T00:00:00Z, or SOURCE_DATE_EPOCH (reproducible-builds.org) when set.
_DEFAULT_EPOCH = 1_577_836_800
# Zip (DOS) times start at 1980-01-01; earlier SOURCE_DATE_EPOCH values are clamped to it.
_ZIP_MIN_EPOCH = 315_532_800
FILE_MODE = 0o644
DIR_MODE = 0o755
# torch-model-archiver's level for tgz (tarfile's "w:gz"); zip deflate uses zlib's default.
_GZIP_LEVEL = 9
_CHUNK = 1 << 20
# Folders torch-model-archiver leaves out of archives (with every hidden one).
_UNWANTED_DIRS = {"__MACOSX", "__pycache__"}
MANIFEST_NAME = f"{MAR_INF}/{MANIFEST_FILE_NAME}"
ENTRY_MODULE = "scibert_pack_handler"
HANDLER_PACKAGE = "scibert_pack_handlers"
_ENTRY_SOURCE = f'''"""TorchServe entry point, written by scibert-pack build."""

from {HANDLER_PACKAGE}.torchserve_entry import handle

__all__ = ["handle"]
'''

# One archive member: its name in the archive and where its bytes come from.
Entry = tuple[str, Path | bytes]


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else _DEFAULT_EPOCH


def stage_handler(stage: Path, handler_dir: Path) -> None:
    """The handler package under its in-archive name plus the entry module TorchServe imports."""
    package = stage / HANDLER_PACKAGE
    package.mkdir()
    for source in sorted(handler_dir.glob("*.py")):
        shutil.copyfile(source, package / source.name)
    (stage / f"{ENTRY_MODULE}.py").write_text(_ENTRY_SOURCE, encoding="utf-8")


def pack(
    stage: Path,
    export_dir: Path,
    *,
    name: str,
    version: str,
    archive_format: ArchiveFormat,
    serialized_file: str | None,
) -> Path:
    """Archive `stage` into `export_dir`; returns the archive (a folder for no-archive)."""
    config = ModelArchiverConfig(
        model_name=name,
        handler=f"{ENTRY_MODULE}.py",
        version=version,
        serialized_file=serialized_file,
        config_file="model-config.yaml",
        export_path=str(export_dir),
        archive_format=archive_format,  # type: ignore[arg-type]  # it knows zip-store too
    )
    try:
        ModelExportUtils.validate_inputs(name, str(export_dir))
    except ModelArchiverError as err:
        raise BuildError(
            f"torch-model-archiver refused model name {name!r} or export folder {export_dir} "
            f"({str(err).strip()})",
            fix="pass --model-name matching [A-Za-z0-9][A-Za-z0-9_.-]* and -o with a writable "
            "folder",
        ) from err
    manifest = _reproducible_manifest(ModelExportUtils.generate_manifest_json(config))
    target = Path(ModelExportUtils.get_archive_export_path(str(export_dir), name, archive_format))
    if archive_format == "no-archive":
        ModelExportUtils.archive(str(export_dir), name, str(stage), manifest, archive_format)
        pin_tree(target)
        return target
    entries = sorted(
        [*staged_files(stage), (MANIFEST_NAME, manifest.encode("utf-8"))], key=lambda e: e[0]
    )
    if archive_format == "tgz":
        write_tgz(target, name, entries)
    else:
        compression = zipfile.ZIP_STORED if archive_format == "zip-store" else zipfile.ZIP_DEFLATED
        write_zip(target, entries, compression)
    return target


def staged_files(stage: Path) -> list[Entry]:
    """Every file under `stage` by its archive name (posix, sorted); skips the folders
    torch-model-archiver skips (hidden ones, __pycache__, __MACOSX)."""
    found: list[Entry] = []
    for root, dirs, files in os.walk(stage):
        dirs[:] = [d for d in dirs if ModelExportUtils.directory_filter(d, _UNWANTED_DIRS)]
        for file in files:
            path = Path(root, file)
            found.append((path.relative_to(stage).as_posix(), path))
    return sorted(found, key=lambda entry: entry[0])


def write_zip(target: Path, entries: Sequence[Entry], compression: int) -> None:
    """A zip whose bytes depend only on the entries' names and contents."""
    stamp = time.gmtime(max(source_date_epoch(), _ZIP_MIN_EPOCH))[:6]
    with zipfile.ZipFile(target, "x", compression) as archive:
        for arcname, source in entries:
            info = zipfile.ZipInfo(arcname, date_time=stamp)
            info.compress_type = compression
            info.create_system = 3  # Unix, so external_attr carries the mode
            info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
            if isinstance(source, bytes):
                archive.writestr(info, source)
                continue
            info.file_size = source.stat().st_size  # lets zipfile choose zip64 up front
            with source.open("rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def write_tgz(target: Path, name: str, entries: Sequence[Entry]) -> None:
    """A gzip'd tar with every member under `name`/, owner 0/0 without names, one time."""
    epoch = source_date_epoch()
    with (
        target.open("xb") as raw,
        # filename="" keeps the output's name out of the gzip header; mtime pins its time.
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=epoch
        ) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for arcname, source in entries:
            info = tarfile.TarInfo(f"{name}/{arcname}")
            info.type = tarfile.REGTYPE
            info.mode = FILE_MODE
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if isinstance(source, bytes):
                info.size = len(source)
                tar.addfile(info, io.BytesIO(source))
                continue
            with source.open("rb") as src:
                info.size = os.fstat(src.fileno()).st_size
                tar.addfile(info, src)


def pin_tree(root: Path) -> None:
    """A folder's modes (files 0644, folders 0755) and times fixed, whatever the umask."""
    epoch = source_date_epoch()
    for path in (*_walk(root), root):
        os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)
        os.utime(path, (epoch, epoch))


def _walk(root: Path) -> Iterator[Path]:
    # Children before their folder, so setting a folder's time comes after its last change.
    for current, dirs, files in os.walk(root, topdown=False):
        for name in (*files, *dirs):
            yield Path(current, name)


def _reproducible_manifest(manifest: str) -> str:
    data = json.loads(manifest)
    # The archiver's format (day/month/year), pinned like every other timestamp.
    data["createdOn"] = time.strftime("%d/%m/%Y %H:%M:%S", time.gmtime(source_date_epoch()))
    return json.dumps(data, indent=2)
