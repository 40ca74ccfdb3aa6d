"""Packs a staged model directory with torch-model-archiver's Python API, reproducibly.

torch-model-archiver stages in `tempfile.gettempdir()/<name>` (parallel builds of one name clobber
each other), stamps the manifest with the current time and zips files with their mtimes. We stage
in a private directory, pin every timestamp and hand only the packing step to the archiver.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Iterable
from pathlib import Path

from model_archiver.model_archiver_config import ModelArchiverConfig
from model_archiver.model_packaging_utils import ModelExportUtils

from scibert_pack.archiver.settings import ArchiveFormat

# 2020-01-01T00:00:00Z, or SOURCE_DATE_EPOCH (reproducible-builds.org) when set.
_DEFAULT_EPOCH = 1_577_836_800
ENTRY_MODULE = "scibert_pack_handler"
HANDLER_PACKAGE = "scibert_pack_handlers"
_ENTRY_SOURCE = f'''"""TorchServe entry point, written by scibert-pack build."""

from {HANDLER_PACKAGE}.torchserve_entry import handle

__all__ = ["handle"]
'''


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


def pin_timestamps(paths: Iterable[Path]) -> None:
    epoch = source_date_epoch()
    for path in paths:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


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
    pin_timestamps([*stage.rglob("*"), stage])
    config = ModelArchiverConfig(
        model_name=name,
        handler=f"{ENTRY_MODULE}.py",
        version=version,
        serialized_file=serialized_file,
        config_file="model-config.yaml",
        export_path=str(export_dir),
        archive_format=archive_format,  # type: ignore[arg-type]  # it also packs zip-store
    )
    manifest = _reproducible_manifest(ModelExportUtils.generate_manifest_json(config))
    ModelExportUtils.archive(str(export_dir), name, str(stage), manifest, archive_format)
    target = Path(ModelExportUtils.get_archive_export_path(str(export_dir), name, archive_format))
    if archive_format == "tgz":
        _pin_gzip_mtime(target)
    elif archive_format != "no-archive":
        _pin_zip_times(target)
    if archive_format == "no-archive":
        pin_timestamps([*target.rglob("*"), target])
    return target


def _reproducible_manifest(manifest: str) -> str:
    data = json.loads(manifest)
    # The archiver's format (day/month/year), pinned like every other timestamp.
    epoch = source_date_epoch()
    data["createdOn"] = time.strftime("%d/%m/%Y %H:%M:%S", time.gmtime(epoch))
    return json.dumps(data, indent=2)


def _pin_gzip_mtime(path: Path) -> None:
    # gzip stores its write time in header bytes 4-7; no header CRC covers them (FHCRC unset).
    with path.open("r+b") as fh:
        header = fh.read(10)
        if header[:2] == b"\x1f\x8b" and not header[3] & 0x02:
            fh.seek(4)
            fh.write(source_date_epoch().to_bytes(4, "little"))


def _pin_zip_times(path: Path) -> None:
    """Set every entry's DOS time in place: the archiver writes MANIFEST.json at 'now'.

    Only the time/date fields of the local and central headers change; no CRC covers them.
    """
    t = time.gmtime(source_date_epoch())
    dos_time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    dos_date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    stamp = struct.pack("<HH", dos_time, dos_date)
    with path.open("r+b") as fh:
        fh.seek(0, os.SEEK_END)
        tail_start = max(0, fh.tell() - (1 << 16) - 22)
        fh.seek(tail_start)
        tail = fh.read()
        eocd = tail.rfind(b"PK\x05\x06")
        if eocd < 0:
            raise ValueError(f"{path} has no zip end-of-central-directory record")
        count, _, cd_offset = struct.unpack_from("<HII", tail, eocd + 10)
        fh.seek(cd_offset)
        central = fh.read(tail_start + eocd - cd_offset)
        pos = 0
        for _ in range(count):
            if central[pos : pos + 4] != b"PK\x01\x02":
                raise ValueError(f"{path} has an unreadable central directory")
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", central, pos + 28)
            (local_offset,) = struct.unpack_from("<I", central, pos + 42)
            fh.seek(cd_offset + pos + 12)
            fh.write(stamp)
            fh.seek(local_offset + 10)
            fh.write(stamp)
            pos += 46 + name_len + extra_len + comment_len
