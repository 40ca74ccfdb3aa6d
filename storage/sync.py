"""Plan and run an upload of a model store through any backend, never exposing a half-upload.

Order of writes: every file except config/config.properties (in parallel where the backend can),
then config/config.properties (so an interrupted version is not even startable by the TorchServe
runtime), then a check of every stored file, then the completion record. The storageUri is
handed back only after that, and a version is never rewritten in place with other content.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scibert_pack.errors import StorageError, StoreError
from scibert_pack.files import sha256_file
from scibert_pack.layout import CONFIG_FILE
from scibert_pack.storage.backend import Backend, RemoteFile
from scibert_pack.storage.local_store import LocalFile, LocalStore

RECORD_SCHEMA = "scibert-pack/upload-record/v1"
Action = Literal["upload", "skip"]


@dataclass(frozen=True)
class UploadProgress:
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int


@dataclass(frozen=True)
class PlannedFile:
    file: LocalFile
    action: Action


@dataclass(frozen=True)
class UploadPlan:
    store: LocalStore
    storage_uri: str
    record_uri: str
    files: tuple[PlannedFile, ...]
    # Names inside the version that the store does not have; only --delete removes them.
    extras: tuple[str, ...]
    # Names under the base location outside this version (older versions); removed by --delete.
    strays: tuple[str, ...]
    delete: bool
    # True when the completion record is already there, identical.
    recorded: bool
    warnings: tuple[str, ...]

    @property
    def to_upload(self) -> tuple[LocalFile, ...]:
        return tuple(p.file for p in self.files if p.action == "upload")


@dataclass(frozen=True)
class UploadResult:
    plan: UploadPlan
    uploaded: tuple[str, ...]
    bytes_transferred: int
    deleted: tuple[str, ...]


def plan_upload(store: LocalStore, backend: Backend, *, delete: bool = False) -> UploadPlan:
    """What an upload would do; reads the storage, writes nothing (this is also --dry-run)."""
    if backend.drops_empty_files and store.empty_files:
        raise StoreError(
            f"model store {store.root} has empty files: {', '.join(store.empty_files)}; "
            "KServe's storage initializer skips 0-byte objects, so the served model would "
            "lack them",
            fix="give them content or remove them from the store, then rerun",
        )
    warnings = backend.check(store)
    kept = empty_files_warning(store, backend.version_uri(store.version))
    if kept is not None:
        warnings.append(kept)
    existing = backend.read_version(store.version, store.files)
    wanted = {f.path for f in store.files}
    files = tuple(
        PlannedFile(f, "skip" if _unchanged(f, existing.get(f.path)) else "upload")
        for f in store.files
    )
    extras = tuple(backend.member(store.version, p) for p in sorted(existing) if p not in wanted)
    if extras and not delete:
        raise StorageError(
            f"{backend.version_uri(store.version)} holds files the store does not have: "
            f"{', '.join(backend.uri_of(n) for n in extras)}; KServe would download them too",
            fix="rerun with --delete to remove them",
        )
    record = completion_record(store, backend.version_uri(store.version))
    return UploadPlan(
        store=store,
        storage_uri=backend.version_uri(store.version),
        record_uri=backend.record_uri(store.version),
        files=files,
        extras=extras,
        strays=tuple(backend.strays(store.version)) if delete else (),
        delete=delete,
        recorded=backend.read_record(store.version) == record,
        warnings=tuple(warnings),
    )


def run_upload(
    plan: UploadPlan,
    backend: Backend,
    *,
    on_progress: Callable[[UploadProgress], None] | None = None,
    on_object: Callable[[LocalFile], None] | None = None,
) -> UploadResult:
    """Carry out `plan`. `on_object` runs after each file lands (an exception from it stops the
    upload there, as an interruption would); the version is complete only when this returns."""
    store = plan.store
    sending = plan.to_upload
    tracker = _Tracker(sum(f.size for f in sending), len(sending), on_progress)

    def landed(file: LocalFile) -> None:
        tracker.file_done()
        if on_object is not None:
            on_object(file)

    if plan.extras:
        backend.delete(plan.extras)
    for batch in (
        [f for f in sending if f.path != CONFIG_FILE],
        [f for f in sending if f.path == CONFIG_FILE],
    ):
        if batch:
            backend.put(store.version, batch, tracker.add_bytes, landed)
    _check_unchanged_since_read(sending)
    backend.verify(store.version, store.files)
    if not plan.recorded or sending or plan.extras:
        backend.commit(store.version, completion_record(store, plan.storage_uri))
    deleted: tuple[str, ...] = ()
    if plan.delete and plan.strays:
        backend.delete(plan.strays)
        deleted = tuple(backend.uri_of(n) for n in plan.strays)
    return UploadResult(
        plan=plan,
        uploaded=tuple(f.path for f in sending),
        bytes_transferred=tracker.bytes_done,
        deleted=deleted,
    )


def _check_unchanged_since_read(files: Sequence[LocalFile]) -> None:
    """A file rewritten in place while it was sent went up mixed, and a backend that checks the
    stored bytes against the local file as it is now (S3's checksum) would find them equal."""
    for f in files:
        now = sha256_file(f.source)
        if now != f.sha256:
            raise StorageError(
                f"{f.source} changed while it was being uploaded (sha256 {f.sha256[:12]}... when "
                f"the upload started, {now[:12]}... now); the version was not marked complete",
                fix="rerun `scibert-pack upload` once nothing writes to the store (is a build "
                "still writing into it?)",
            )


def empty_files_warning(store: LocalStore, where: str) -> str | None:
    """The warning for empty files on storage that keeps them (a PVC, a local path); None when
    the store has none. `where` names that storage (the version's URI) in the message."""
    if not store.empty_files:
        return None
    return (
        f"model store {store.root} has empty files: {', '.join(store.empty_files)}; {where} "
        "keeps them, but KServe's S3 downloader skips 0-byte objects, so the same store "
        "served from S3 would lack them (and `scibert-pack upload` to S3 refuses it): give "
        "them content or remove them if the model needs them"
    )


def completion_record(store: LocalStore, storage_uri: str) -> bytes:
    """The record that marks a version complete; deterministic, so a rerun can compare it."""
    record = {
        "schema": RECORD_SCHEMA,
        "storage_uri": storage_uri,
        "version": store.version,
        "tree_sha256": store.tree_sha256,
        "model_name": store.model_name,
        "model_version": store.model_version,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in store.files],
    }
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")


def plan_json(plan: UploadPlan, backend: Backend) -> dict[str, Any]:
    return {
        "storage_uri": plan.storage_uri,
        "record_uri": plan.record_uri,
        "version": plan.store.version,
        "tree_sha256": plan.store.tree_sha256,
        "objects": [
            {
                "path": p.file.path,
                "uri": plan.storage_uri.rstrip("/") + "/" + p.file.path,
                "size": p.file.size,
                "sha256": p.file.sha256,
                "action": p.action,
            }
            for p in plan.files
        ],
        "remove": [backend.uri_of(n) for n in (*plan.extras, *plan.strays)],
        "warnings": list(plan.warnings),
    }


def result_json(result: UploadResult, backend: Backend) -> dict[str, Any]:
    record = plan_json(result.plan, backend)
    uploaded = set(result.uploaded)
    for obj in record["objects"]:
        obj["action"] = "uploaded" if obj["path"] in uploaded else "unchanged"
    record.pop("remove")
    record["complete"] = True
    record["deleted"] = [*(backend.uri_of(n) for n in result.plan.extras), *result.deleted]
    record["transferred"] = {"files": len(result.uploaded), "bytes": result.bytes_transferred}
    return record


def _unchanged(local: LocalFile, remote: RemoteFile | None) -> bool:
    return remote is not None and remote.size == local.size and remote.sha256 == local.sha256


class _Tracker:
    """Sums progress reported from transfer threads and hands out consistent snapshots."""

    def __init__(
        self, bytes_total: int, files_total: int, sink: Callable[[UploadProgress], None] | None
    ) -> None:
        self._lock = threading.Lock()
        self._sink = sink
        self.bytes_total = bytes_total
        self.files_total = files_total
        self.bytes_done = 0
        self.files_done = 0

    def add_bytes(self, n: int) -> None:
        # A retried part reports negative progress first; the sum stays right.
        with self._lock:
            self.bytes_done += n
            self._emit()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
            self._emit()

    def _emit(self) -> None:
        if self._sink is not None:
            self._sink(
                UploadProgress(self.bytes_done, self.bytes_total, self.files_done, self.files_total)
            )
