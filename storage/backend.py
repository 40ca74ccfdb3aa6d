"""The one interface every storage backend implements (S3, a filesystem; GCS or Azure later).

A backend knows one base location (an S3 prefix, a directory) and keeps each store version in
its own immutable place under it, plus a completion record written last. `scibert_pack.storage.
sync` drives any backend through the same steps, so a new backend only answers these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from scibert_pack.storage.local_store import LocalFile, LocalStore

ByteCallback = Callable[[int], None]
FileCallback = Callable[[LocalFile], None]


@dataclass(frozen=True)
class RemoteFile:
    size: int
    # The sha256 the backend can vouch for (S3: object metadata; filesystem: hashed); None when
    # the object carries none (written by another tool), so it never counts as unchanged.
    sha256: str | None


class Backend(Protocol):
    # KServe's storage initializer drops 0-byte objects when it downloads (S3); a mount keeps them.
    drops_empty_files: bool

    def version_uri(self, version: str) -> str:
        """The storageUri of a version: what goes into the InferenceService."""
        ...

    def record_uri(self, version: str) -> str: ...

    def check(self, store: LocalStore) -> list[str]:
        """Reach the storage and check the base location for `store`; raise when it cannot be
        used safely, return warnings (with their fix) otherwise. Writes nothing."""
        ...

    def read_version(self, version: str, files: Sequence[LocalFile]) -> dict[str, RemoteFile]:
        """Files already stored for `version` (complete or left by an interrupted upload);
        `files` are the local ones, for backends that check stored bytes against them."""
        ...

    def read_record(self, version: str) -> bytes | None: ...

    def put(
        self,
        version: str,
        files: Sequence[LocalFile],
        on_bytes: ByteCallback,
        on_file: FileCallback,
    ) -> None:
        """Store `files` under `version`, calling `on_file` after each one lands."""
        ...

    def verify(self, version: str, files: Sequence[LocalFile]) -> None:
        """Raise StorageError unless every stored file has the local size and sha256."""
        ...

    def commit(self, version: str, record: bytes) -> None:
        """Make `version` complete: its completion record is the last thing written."""
        ...

    def member(self, version: str, path: str) -> str:
        """The backend's name (key, relative path) of a file of `version`, for `delete`."""
        ...

    def strays(self, version: str) -> list[str]:
        """Names under the base location that belong to no part of `version`."""
        ...

    def delete(self, names: Sequence[str]) -> None: ...

    def uri_of(self, name: str) -> str: ...
