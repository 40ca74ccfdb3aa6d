"""`scibert-pack build`: a checked classifier folder becomes a KServe-ready model store.

OUT/model-store/NAME.mar + OUT/config/config.properties + OUT/build-report.json. Everything is
made in a private directory inside OUT and moved into place with renames, the report last, so a
failed or interrupted build leaves the previous store (or nothing) behind, never a partial one.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scibert_pack import __version__
from scibert_pack.archiver.archive import pack, stage_handler
from scibert_pack.archiver.model_folder import ModelFolder, inspect_model_folder
from scibert_pack.archiver.report import build_report, write_report
from scibert_pack.archiver.settings import ARCHIVE_SUFFIX, BuildSettings
from scibert_pack.config import properties
from scibert_pack.errors import BuildError, InputError, ScibertPackError
from scibert_pack.handlers import settings as handler_settings
from scibert_pack.layout import CONFIG_FILE, MODEL_STORE_DIR, REPORT_FILE

Progress = Callable[[str], None]
# EFBIG: a file-size limit (ulimit -f, quotas) stops the write the same way a full disk does.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Encoders whose position table has two extra rows (the padding offset of RoBERTa-style models).
_POSITION_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer"}


@dataclass(frozen=True)
class BuildResult:
    output: Path
    archive: Path
    config: Path
    report_path: Path
    report: dict[str, Any]
    warnings: tuple[str, ...]
    seconds: float


def _silent(_: str) -> None:
    pass


def build(
    model_dir: Path, settings: BuildSettings, output: Path, *, progress: Progress = _silent
) -> BuildResult:
    started = time.monotonic()
    progress(f"checking model folder {model_dir}")
    folder = inspect_model_folder(model_dir, allow_pickle=settings.allow_pickle)
    handler = _handler_settings(settings, folder)
    created_output = not output.exists()
    if output.exists() and not output.is_dir():
        raise InputError(
            f"output {output} exists and is not a folder",
            fix="pass -o with a new or existing folder",
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".scibert-pack-build-", dir=output))
    except OSError as err:
        raise BuildError(
            f"cannot create output folder {output} ({err.strerror})",
            fix="pass -o with a folder you can write to",
        ) from err
    try:
        result = _build_in(work, folder, settings, handler, output, progress)
    except ScibertPackError:
        raise
    except OSError as err:
        raise BuildError(_os_failure(err, model_dir, output), fix=_os_fix(err, output)) from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created_output:
            with contextlib.suppress(OSError):
                output.rmdir()  # only when the failed build left it empty
    seconds = time.monotonic() - started
    progress(f"built {result[0]} in {seconds:.1f} s")
    archive, config, report_path, report = result
    return BuildResult(output, archive, config, report_path, report, folder.warnings, seconds)


def _handler_settings(
    settings: BuildSettings, folder: ModelFolder
) -> handler_settings.HandlerSettings:
    model_max = folder.max_positions
    if model_max is not None and folder.model_type in _POSITION_OFFSET_TYPES:
        model_max -= 2
    requested = settings.max_length
    if requested is not None and model_max is not None and requested > model_max:
        raise InputError(
            f"--max-length {requested} is more than {folder.path} can read "
            f"({model_max} tokens, from max_position_embeddings in config.json)",
            fix=f"pass --max-length {model_max} or less",
        )
    default = settings.handler.max_length
    max_length = requested or (min(default, model_max) if model_max else default)
    try:
        return handler_settings.HandlerSettings.from_mapping(
            {
                **settings.handler.to_mapping(),
                "max_length": max_length,
                # The worker loads pickle weights only from archives built with --allow-pickle.
                "allow_pickle": settings.allow_pickle,
            }
        )
    except handler_settings.SettingsError as err:
        raise InputError(f"handler setting rejected: {err}", fix="change that option") from err


def _build_in(
    work: Path,
    folder: ModelFolder,
    settings: BuildSettings,
    handler: handler_settings.HandlerSettings,
    output: Path,
    progress: Progress,
) -> tuple[Path, Path, Path, dict[str, Any]]:
    stage, export = work / "stage", work / "export"
    stage.mkdir()
    export.mkdir()
    size = sum((folder.path / f).stat().st_size for f in folder.files)
    progress(f"staging {len(folder.files)} model files ({size / 1e6:.1f} MB)")
    for name in folder.files:
        shutil.copyfile(folder.path / name, stage / name)
    (stage / "model-config.yaml").write_text(_model_config(settings, handler), encoding="utf-8")
    stage_handler(stage, Path(handler_settings.__file__).parent)

    progress(f"packing {settings.archive_name} ({settings.archive_format})")
    single = [f for f in folder.weight_files if not f.endswith(".json")]
    archive = pack(
        stage,
        export,
        name=settings.name,
        version=settings.version,
        archive_format=settings.archive_format,
        serialized_file=single[0] if len(single) == 1 else None,
    )
    model_store = (
        properties.KSERVE_MODEL_STORE
        if settings.profile == "kserve"
        else str((output / MODEL_STORE_DIR).resolve())
    )
    config_text = properties.render(
        _server_config(settings, model_store), generator=f"scibert-pack {__version__}"
    )
    (work / "config.properties").write_text(config_text, encoding="utf-8")

    progress("hashing artifacts")
    report = build_report(
        settings=settings,
        handler=handler,
        folder=folder,
        archive=archive,
        config_file=work / "config.properties",
        archive_rel=f"{MODEL_STORE_DIR}/{settings.archive_name}",
        config_rel=CONFIG_FILE,
    )
    write_report(work / REPORT_FILE, report)
    return (*_publish(work, archive, settings, output), report)


def _model_config(settings: BuildSettings, handler: handler_settings.HandlerSettings) -> str:
    # TorchServe's per-model keys (the same values as model_snapshot) and our handler section.
    data = {
        "minWorkers": settings.min_workers,
        "maxWorkers": settings.max_workers,
        "batchSize": settings.batch_size,
        "maxBatchDelay": settings.max_batch_delay_ms,
        "responseTimeout": settings.response_timeout_s,
        "startupTimeout": settings.startup_timeout_s,
        "handler": handler.to_mapping(),
    }
    return yaml.safe_dump(data, sort_keys=True)


def _server_config(settings: BuildSettings, model_store: str) -> properties.ServerConfig:
    return properties.ServerConfig(
        profile=settings.profile,
        model=properties.ModelEntry(
            name=settings.name,
            version=settings.version,
            mar_name=settings.archive_name,
            min_workers=settings.min_workers,
            max_workers=settings.max_workers,
            batch_size=settings.batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            response_timeout_s=settings.response_timeout_s,
            startup_timeout_s=settings.startup_timeout_s,
        ),
        model_store=model_store,
        ports=settings.ports,
        token_auth=settings.token_auth,
        netty_threads=settings.netty_threads,
        job_queue_size=settings.job_queue_size,
        max_request_bytes=settings.max_request_bytes,
    )


def _publish(
    work: Path, archive: Path, settings: BuildSettings, output: Path
) -> tuple[Path, Path, Path]:
    """Rename everything into place: archive, then config, then the report that marks it done."""
    store = output / MODEL_STORE_DIR
    store.mkdir(exist_ok=True)
    (output / CONFIG_FILE).parent.mkdir(exist_ok=True)
    target = store / settings.archive_name
    _replace(archive, target)
    for suffix in set(ARCHIVE_SUFFIX.values()) - {ARCHIVE_SUFFIX[settings.archive_format]}:
        _remove(store / f"{settings.name}{suffix}")  # an earlier build in another format
    config = output / CONFIG_FILE
    _replace(work / "config.properties", config)
    report = output / REPORT_FILE
    _replace(work / REPORT_FILE, report)
    return target, config, report


def _replace(source: Path, target: Path) -> None:
    if source.is_dir() and target.exists():
        # A folder cannot be renamed over a non-empty one: move the old one aside first.
        old = target.with_name(f".{target.name}.old")
        _remove(old)
        target.rename(old)
        source.rename(target)
        _remove(old)
    else:
        source.replace(target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _os_failure(err: OSError, model_dir: Path, output: Path) -> str:
    where = f" ({err.filename})" if err.filename else ""
    if err.errno in _NO_SPACE:
        return f"building into {output} ran out of disk space{where}; nothing was published"
    if isinstance(err, FileNotFoundError):
        return f"a file vanished while building from {model_dir}{where}; nothing was published"
    return f"building into {output} failed: {err.strerror or err}{where}; nothing was published"


def _os_fix(err: OSError, output: Path) -> str:
    if err.errno in _NO_SPACE:
        return f"free space on the disk of {output} (about twice the model's size) and rerun"
    if isinstance(err, FileNotFoundError):
        return "keep the model folder in place until the build finishes and rerun"
    return "check the permissions of the model folder and the output folder, then rerun"
