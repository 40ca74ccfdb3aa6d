"""From a parsed target to the backend that writes it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from scibert_pack.errors import InputError
from scibert_pack.storage.backend import Backend
from scibert_pack.storage.filesystem import FilesystemBackend
from scibert_pack.storage.targets import LocalTarget, PvcTarget, S3Target, Target

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from scibert_pack.storage.s3 import S3Settings


def backend_for(
    target: Target,
    *,
    s3_settings: S3Settings | None = None,
    s3_client: S3Client | None = None,
    pvc_mount: Path | None = None,
) -> Backend:
    """The backend for `target`; `s3_client` replaces the one built from `s3_settings`."""
    if isinstance(target, S3Target):
        # boto3 is imported only when S3 is used.
        from scibert_pack.storage.s3 import S3Backend, S3Settings, make_client

        settings = s3_settings or S3Settings()
        return S3Backend(s3_client or make_client(settings), target, settings)
    if isinstance(target, PvcTarget):
        if pvc_mount is None:
            raise InputError(
                f"{target.uri} needs the claim mounted on this machine",
                fix="pass --pvc-mount DIR (where the claim is mounted), or run the kubectl "
                "steps `scibert-pack upload` prints without it",
            )
        if not pvc_mount.is_dir():
            raise InputError(
                f"--pvc-mount {pvc_mount} is not a directory",
                fix=f"mount claim {target.claim!r} there first (e.g. its NFS export), "
                "or drop --pvc-mount to get the kubectl steps",
            )
        root = pvc_mount / target.path if target.path else pvc_mount
        return FilesystemBackend(root, uri_base=target.uri)
    assert isinstance(target, LocalTarget)
    return FilesystemBackend(target.path)
