"""Filesystem backend: a local directory, or a PVC mounted on this machine (copy pod, NFS).

Layout under ROOT:
  ROOT/.VERSION.partial/            staging: files land here first (kept to resume a rerun)
  ROOT/VERSION/                     the complete version, renamed from staging in one step
  ROOT/VERSION.complete.json        the completion record, written last
Staging is inside ROOT, so the rename stays on one filesystem and is atomic: a pod reading the
claim sees no version or a whole one. The record sits beside the version for the same reason as
on S3: the served directory must equal the local store exactly.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from scibert_pack.errors import InputError, StorageError
from scibert_pack.files import atomic_write_bytes, sha256_file
from scibert_pack.layout import CONFIG_FILE
from scibert_pack.storage.backend import ByteCallback, FileCallback, RemoteFile
from scibert_pack.storage.local_store import LocalFile, LocalStore

_RECORD_SUFFIX = ".complete.json"
_PARTIAL = re.compile(r"^\.(.+)\.partial$")
_CHUNK = 1 << 20


class FilesystemBackend:
    drops_empty_files = False

    def __init__(self, root: Path, *, uri_base: str | None = None) -> None:
        """`uri_base` is the storageUri of `root` (pvc://claim/path); None for a plain path."""
        self._root = root
        self._uri_base = uri_base

    # -- names ---------------------------------------------------------------------------------
    def _final(self, version: str) -> Path:
        return self._root / version

    def _staging(self, version: str) -> Path:
        return self._root / f".{version}.partial"

    def _record(self, version: str) -> Path:
        return self._root / f"{version}{_RECORD_SUFFIX}"

    def _current(self, version: str) -> Path:
        final = self._final(version)
        return final if final.is_dir() else self._staging(version)

    def version_uri(self, version: str) -> str:
        if self._uri_base is None:
            return str(self._final(version))
        # A folder: a trailing slash, as every printed storageUri has (README).
        return f"{self._uri_base.rstrip('/')}/{version}/"

    def record_uri(self, version: str) -> str:
        return str(self._record(version))

    def uri_of(self, name: str) -> str:
        return str(self._root / name)

    def member(self, version: str, path: str) -> str:
        return self._current(version).relative_to(self._root).joinpath(path).as_posix()

    # -- reading -------------------------------------------------------------------------------
    def check(self, store: LocalStore) -> list[str]:
        if self._root.exists() and not self._root.is_dir():
            raise StorageError(
                f"{self._root} is a file, not a directory",
                fix="give a directory to upload into",
            )
        self._check_not_nested(store.root)
        self._refuse_links(store.version)
        if (self._root / CONFIG_FILE).exists():
            raise StorageError(
                f"{self._root} already holds an unversioned model store ({CONFIG_FILE}); "
                "versions uploaded beneath it would be served along with it",
                fix=f"upload to another directory, e.g. {self._root}-versions",
            )
        return []

    def _check_not_nested(self, source: Path) -> None:
        """A destination inside the store would be part of the next version uploaded from it
        (each run publishing the one before); a store inside the destination would be mixed
        with the versions there. Symlinks are resolved: the real folders must not overlap."""
        dest, store = self._root.resolve(), source.resolve()
        instead = store.parent / f"{store.name}-versions"
        if dest == store or store in dest.parents:
            raise InputError(
                f"destination {self._where()} is "
                + ("the model store" if dest == store else "inside the model store")
                + f" {source}: the next upload of that store would publish a version holding "
                "this one",
                fix=f"upload to a folder outside {source}, e.g. {instead}",
            )
        if dest in store.parents:
            raise InputError(
                f"model store {source} is inside the destination {self._where()}: its files "
                "would sit among the uploaded versions, and a reader of the destination "
                "would see both",
                fix=f"upload to a folder that does not hold the store, e.g. {instead}",
            )

    def _refuse_links(self, version: str) -> None:
        """A link at (or in) a version's staging or final folder would take the copy outside
        the destination, and a linked version could be changed later through its target."""
        links = [*_links_in(self._final(version)), *_links_in(self._staging(version))]
        if links:
            raise StorageError(
                f"{links[0]} in the destination is a symbolic link: upload writes versions only "
                f"into real folders inside {self._where()}",
                fix=f"remove it (rm {links[0]}) and rerun; upload makes its folders itself",
            )

    def _where(self) -> str:
        if self._uri_base is None:
            return str(self._root)
        return f"{self._uri_base} (mounted at {self._root})"

    def read_version(self, version: str, files: Sequence[LocalFile] = ()) -> dict[str, RemoteFile]:
        base = self._current(version)
        return {
            rel: RemoteFile(path.stat().st_size, sha256_file(path)) for rel, path in _files(base)
        }

    def read_record(self, version: str) -> bytes | None:
        try:
            return self._record(version).read_bytes()
        except FileNotFoundError:
            return None

    # -- writing -------------------------------------------------------------------------------
    def put(
        self,
        version: str,
        files: Sequence[LocalFile],
        on_bytes: ByteCallback,
        on_file: FileCallback,
    ) -> None:
        if self._final(version).is_dir():
            raise StorageError(
                f"{self._final(version)} differs from the store it was uploaded from, "
                "but a version is never changed in place",
                fix="delete that directory and its .complete.json record, then rerun",
            )
        self._refuse_links(version)
        staging = self._staging(version)
        with _os_errors(f"copy into {staging}"):
            for f in files:
                _copy(f.source, staging / f.path, on_bytes)
                on_file(f)

    def verify(self, version: str, files: Sequence[LocalFile]) -> None:
        stored = self.read_version(version)
        for f in files:
            got = stored.get(f.path)
            if got is None or got.size != f.size or got.sha256 != f.sha256:
                raise StorageError(
                    f"{self._current(version) / f.path} does not match {f.source} after copying",
                    fix="check the disk or mount, then rerun",
                )

    def commit(self, version: str, record: bytes) -> None:
        final = self._final(version)
        with _os_errors(f"complete {final}"):
            if not final.is_dir():
                _purge_hidden(self._staging(version))
                os.rename(self._staging(version), final)
                _fsync_dir(self._root)
            atomic_write_bytes(self._record(version), record)

    def strays(self, version: str) -> list[str]:
        """Only what an upload made (versions with a record, their records, staging dirs): a
        directory given by mistake keeps everything else."""
        if not self._root.is_dir():
            return []
        keep = {version, f"{version}{_RECORD_SUFFIX}", self._staging(version).name}
        names = {p.name for p in self._root.iterdir()}
        ours = set()
        for name in names - keep:
            if name.endswith(_RECORD_SUFFIX):
                ours.add(name)
                stem = name[: -len(_RECORD_SUFFIX)]
                if stem in names:
                    ours.add(stem)
            elif _PARTIAL.fullmatch(name):
                ours.add(name)
        return sorted(ours)

    def delete(self, names: Sequence[str]) -> None:
        with _os_errors(f"delete in {self._root}"):
            for name in names:
                path = self._root / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)


def _links_in(base: Path) -> list[Path]:
    """`base` if it is a symbolic link, else every link beneath it (none are followed)."""
    if base.is_symlink():
        return [base]
    found = []
    for folder, dirs, files in os.walk(base):
        found += [Path(folder, n) for n in sorted(dirs + files) if Path(folder, n).is_symlink()]
    return found


def _files(base: Path) -> list[tuple[str, Path]]:
    if not base.is_dir():
        return []
    return sorted(
        (p.relative_to(base).as_posix(), p)
        for p in base.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def _copy(source: Path, dest: Path, on_bytes: ByteCallback) -> None:
    """Copy through a temp file in the destination folder, so a file is whole or absent."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                on_bytes(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _purge_hidden(base: Path) -> None:
    """Temp files left by a killed copy are no part of the store; they must not be served."""
    for path in sorted(base.rglob(".*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _os_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise StorageError(
            f"could not {doing}: {err.strerror or err} ({err.filename or ''})",
            fix="check free space and write permission there, then rerun (it resumes)",
        ) from err
