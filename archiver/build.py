"""`scibert-pack build`: a checked classifier folder becomes a KServe-ready model store.

OUT/model-store/NAME.mar + OUT/config/config.properties + OUT/build-report.json. Everything is
made in a private directory inside OUT and moved into place with renames, the report last, so a
failed or interrupted build leaves the previous store (or nothing) behind, never a partial one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scibert_pack import __version__
from scibert_pack.archiver.archive import pack, stage_handler
from scibert_pack.archiver.model_folder import ModelFolder, inspect_model_folder
from scibert_pack.archiver.report import build_report, write_report
from scibert_pack.archiver.settings import ARCHIVE_SUFFIX, BuildSettings, setting_error
from scibert_pack.config import properties
from scibert_pack.errors import BuildError, InputError, ModelFolderError
from scibert_pack.handlers import settings as handler_settings
from scibert_pack.handlers.settings import declarations, option_of
from scibert_pack.interrupts import interrupt_after
from scibert_pack.layout import CONFIG_DIR, CONFIG_FILE, MODEL_STORE_DIR, REPORT_FILE
from scibert_pack.progress import ProgressSink, silent

# EFBIG: a file-size limit (ulimit -f, quotas) stops the write the same way a full disk does.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Publishing is a few renames (plus removing a replaced no-archive folder): a build that waits
# longer than this for another one's lock on the output folder gives up with a clear error.
PUBLISH_LOCK_TIMEOUT_S = 600.0
_LOCK_POLL_S = 0.05


@dataclass(frozen=True)
class BuildResult:
    output: Path
    archive: Path
    config: Path
    report_path: Path
    report: dict[str, Any]
    warnings: tuple[str, ...]
    seconds: float


def build(
    model_dir: Path, settings: BuildSettings, output: Path, *, progress: ProgressSink = silent
) -> BuildResult:
    started = time.monotonic()
    progress(f"checking model folder {model_dir}")
    folder = inspect_model_folder(model_dir, allow_pickle=settings.handler.allow_pickle)
    handler = _handler_settings(settings, folder)
    _check_output(output, model_dir)
    # Folders this build creates: a failed build removes them again when they are left empty.
    created = [
        *(d for d in (output / MODEL_STORE_DIR, output / CONFIG_DIR) if not d.exists()),
        *_missing_folders(output),
    ]
    try:
        output.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".scibert-pack-build-", dir=output))
    except OSError as err:
        _remove_empty(created)
        raise BuildError(
            f"cannot create output folder {output} ({err.strerror})",
            fix="pass -o with a folder you can write to",
        ) from err
    done = False
    try:
        result = _build_in(work, folder, settings, handler, output, progress)
        done = True
    except OSError as err:
        raise BuildError(_os_failure(err, model_dir, output), fix=_os_fix(err, output)) from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not done:
            _remove_empty(created)
    seconds = time.monotonic() - started
    progress(f"built {result[0]} in {seconds:.1f} s")
    archive, config, report_path, report = result
    return BuildResult(output, archive, config, report_path, report, folder.warnings, seconds)


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.name in ("", ".", "..") or folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove each folder that is empty (deepest first): what a failed build created."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # fails, and stays, when anything else is inside


def _handler_settings(
    settings: BuildSettings, folder: ModelFolder
) -> handler_settings.HandlerSettings:
    low, high = handler_settings.RANGES["max_length"]
    model_max = folder.max_positions
    if model_max is not None and model_max < low:
        raise ModelFolderError(
            f"config.json of {folder.path} says the model reads {model_max} tokens "
            f"(from max_position_embeddings); scibert-pack needs at least {low}",
            fix=f"build from a model that reads {low} tokens or more",
        )
    if model_max is not None:
        high = min(high, model_max)
    requested = settings.max_length
    if requested is not None and not low <= requested <= high:
        option = option_of("max_length", declarations(BuildSettings)["max_length"])
        if model_max is not None and requested > model_max:
            problem = (
                f"is more than {folder.path} can read "
                f"({model_max} tokens, from max_position_embeddings in config.json)"
            )
        else:
            problem = f"is out of range (expected {low} to {high})"
        fix = f"pass {option} between {low} and {high}"
        raise InputError(f"{option} {requested} {problem}", fix=fix)
    max_length = requested if requested is not None else min(settings.handler.max_length, high)
    try:
        return dataclasses.replace(settings.handler, max_length=max_length)
    except handler_settings.SettingsError as err:
        raise setting_error(err, handler_settings.HandlerSettings) from err


def _build_in(
    work: Path,
    folder: ModelFolder,
    settings: BuildSettings,
    handler: handler_settings.HandlerSettings,
    output: Path,
    progress: ProgressSink,
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
    check = None
    if handler.runtime == "onnx":
        from scibert_pack.archiver.onnx_export import export_onnx
        from scibert_pack.handlers.onnx_runtime import ONNX_FILE

        progress(f"exporting {ONNX_FILE} and checking it against PyTorch")
        check = export_onnx(folder.path, stage / ONNX_FILE, handler).as_dict()
    elif handler.runtime == "torch-int8":
        from scibert_pack.archiver.int8_check import check_int8

        progress("measuring the int8 model against fp32 on held-out texts")
        check = check_int8(folder.path, handler, settings.min_label_agreement)
    elif handler.runtime == "onnx-int8":
        from scibert_pack.archiver.onnx_export import export_onnx_int8
        from scibert_pack.handlers.onnx_runtime import ONNX_INT8_FILE

        progress(f"exporting {ONNX_INT8_FILE} and measuring it against fp32 on held-out texts")
        target = stage / ONNX_INT8_FILE
        check = export_onnx_int8(folder.path, target, handler, settings.min_label_agreement)

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
    if check is not None:
        # The serving image needs onnxruntime: kserve/dockerfile.py pins the version named here.
        report["runtime_check"] = check
        report["versions"].update(check.get("versions", {}))
    write_report(work / REPORT_FILE, report)
    with _publish_lock(output, progress):
        return (*_publish(work, archive, settings, output), report)


def _check_output(output: Path, model_dir: Path) -> None:
    """`output` is new, empty or an earlier store: a build never mixes its files into a model
    folder, a checkout or a folder of other work (it replaces config/ and model-store/ files)."""
    if output.exists() and not output.is_dir():
        raise InputError(
            f"output {output} exists and is not a folder",
            fix="pass -o with a new or existing folder",
        )
    if not output.is_dir():
        return
    beside = output.parent / f"{output.resolve().name}-store"
    fix = f"pass -o with a new folder (e.g. -o {beside}) or an earlier build's OUT"
    if output.resolve() == model_dir.resolve():
        raise InputError(f"output {output} is the model folder itself", fix=fix)
    # An earlier store (or part of one) is replaced; a leftover build folder is ignored.
    ours = {REPORT_FILE, MODEL_STORE_DIR, CONFIG_DIR}
    others = sorted(
        p.name for p in output.iterdir() if p.name not in ours and not p.name.startswith(".")
    )
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise InputError(
            f"output {output} is a folder that holds other files ({shown}), not a model store",
            fix=fix,
        )
    # A linked config/ or model-store/ would take the build's files to wherever it points.
    linked = [
        output / name for name in (CONFIG_DIR, MODEL_STORE_DIR) if (output / name).is_symlink()
    ]
    if linked:
        raise InputError(
            f"output {output} has {linked[0].name}/ as a symbolic link (to "
            f"{os.readlink(linked[0])}): a build writes only into its own folders",
            fix=f"remove the link (rm {linked[0]}) and rerun, or pass -o with a new folder",
        )


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
    """Rename everything into place: archive, then config, then the report that marks it done;
    a Ctrl-C meanwhile waits for the last rename, so the store is the old build or the new one."""
    with interrupt_after():
        return _rename_into_place(work, archive, settings, output)


def _rename_into_place(
    work: Path, archive: Path, settings: BuildSettings, output: Path
) -> tuple[Path, Path, Path]:
    store = output / MODEL_STORE_DIR
    store.mkdir(exist_ok=True)
    (output / CONFIG_DIR).mkdir(exist_ok=True)
    target = store / settings.archive_name
    _replace(archive, target)
    for suffix in set(ARCHIVE_SUFFIX.values()) - {ARCHIVE_SUFFIX[settings.archive_format]}:
        _remove(store / f"{settings.name}{suffix}")  # an earlier build in another format
    config = output / CONFIG_FILE
    _replace(work / "config.properties", config)
    report = output / REPORT_FILE
    _replace(work / REPORT_FILE, report)
    return target, config, report


@contextlib.contextmanager
def _publish_lock(output: Path, progress: ProgressSink) -> Iterator[None]:
    """One build at a time publishes into `output` (an flock on the folder itself, so no lock
    file is left in the store): parallel builds of one name both succeed, the later one's store
    wins whole, and neither sees the other's half-done renames."""
    fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build that is publishing into {output}")
            _wait_for_lock(fd, output, PUBLISH_LOCK_TIMEOUT_S)
        except OSError:
            pass  # a filesystem without flock (some network mounts): publish unlocked as before
        yield
    finally:
        os.close(fd)  # releases the lock


def _wait_for_lock(fd: int, output: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise BuildError(
                    f"another build has been publishing into {output} for over "
                    f"{timeout_s:.0f} s; nothing was published",
                    fix=f"find the build holding it (fuser -v {output}), stop it if it is "
                    "stuck, then rerun",
                ) from None
            time.sleep(_LOCK_POLL_S)


def _replace(source: Path, target: Path) -> None:
    if source.is_dir() and target.exists():
        # A folder cannot be renamed over a non-empty one: move the old one aside first.
        old = target.with_name(f".{target.name}.old")
        _remove(old)
        target.rename(old)
        try:
            source.rename(target)
        except BaseException:  # Ctrl-C or a failure between the renames: put the old one back
            with contextlib.suppress(OSError):
                old.rename(target)
            raise
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
