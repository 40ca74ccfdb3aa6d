"""The one error hierarchy of scibert-pack.

Every failure the library can foresee is a `ScibertPackError`. Its text states what failed, the
bad value, what was expected and the next step; the CLI renders it in one place and exits with
`exit_code` (2 for bad input, as click does for usage errors; 1 for failures of the work itself).
"""

from __future__ import annotations


class ScibertPackError(Exception):
    """Base of every error scibert-pack raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class InputError(ScibertPackError):
    """The user gave something unusable: an option value, a path, a model folder."""

    exit_code = 2


class ModelFolderError(InputError):
    """The model folder is not a loadable sequence classifier."""


class StoreError(InputError):
    """A built model store (config/config.properties + model-store/*.mar) is missing or broken."""


class BuildError(ScibertPackError):
    """Building the archive or writing the store failed."""


class ServeError(ScibertPackError):
    """Starting or running TorchServe failed."""


class PortInUseError(ServeError):
    """A port TorchServe needs is already taken."""

    exit_code = 2


class UnsafeRunDirError(ServeError):
    """The run folder (or a folder above it) could be changed by another user: refused."""

    exit_code = 2


class ClientError(ScibertPackError):
    """A request to a running server failed."""


class StorageError(ScibertPackError):
    """Uploading a model store to S3 or a PVC failed."""


class ManifestError(ScibertPackError):
    """A KServe manifest could not be produced as asked."""
