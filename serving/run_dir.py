"""The run folder of a local TorchServe: private to the user, or refused.

TorchServe unpacks the handler into the run folder and restarts workers from there, so whoever
can write to it runs code as the serving user. As ssh does with ~/.ssh, the folders this module
creates are made 0700 and checked (a real folder, no link, owned by the user, writable by no one
else) before use, and the folders above them must be the user's or root's and writable by no
one else unless sticky (as /tmp is).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from scibert_pack.errors import InputError, UnsafeRunDirError
from scibert_pack.files import file_kind

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# TorchServe's workers listen on RUN/tmp/.ts.sock.PORT, a Unix socket: its path must fit in
# sun_path (108 bytes with the final NUL), or every worker dies at start and serve only times out.
_SOCKET = "tmp/.ts.sock.9000"  # the first worker's; later ones count up from there
_MAX_SOCKET_PATH = 107
_FIX_ELSEWHERE = "or pass --run-dir DIR with a folder of your own"


def runtime_base() -> Path:
    """$XDG_RUNTIME_DIR (a per-user tmpfs on systemd machines), else the temp folder."""
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())


def user_folder() -> str:
    return f"scibert-pack-{os.getuid()}"


def default_run_dir(port: int) -> Path:
    """Where `serve` keeps logs and the key file when no --run-dir is given: one per port."""
    return runtime_base() / user_folder() / f"serve-{port}"


def secure_run_dir(run_dir: Path) -> Path:
    """Create `run_dir` 0700 (with the folders it needs), check it is private and return its
    real path; UnsafeRunDirError naming the folder, its owner or mode, and the fix otherwise.

    For the default layout (BASE/scibert-pack-UID/serve-PORT) both scibert-pack-UID and
    serve-PORT are created and checked that way; for another folder, the folder itself and any
    folder created on the way. Folders above that must belong to the user or root and be
    writable by no one else, unless sticky."""
    run_dir = Path(os.path.abspath(run_dir))
    base = run_dir.parent.parent if run_dir.parent.name == user_folder() else run_dir.parent
    while not os.path.lexists(base) and base != base.parent:
        base = base.parent  # the folders missing on the way are created private too
    real_base = Path(os.path.realpath(base))
    below: list[str] = [*run_dir.relative_to(base).parts]
    socket_path = str(real_base.joinpath(*below, _SOCKET))
    if len(socket_path.encode()) > _MAX_SOCKET_PATH:
        raise InputError(
            f"run folder {real_base.joinpath(*below)} is too long a path: TorchServe's workers "
            f"listen on Unix sockets in it ({socket_path}, {len(socket_path.encode())} bytes), "
            f"and a socket path has room for {_MAX_SOCKET_PATH} bytes",
            fix="pass a shorter --run-dir (e.g. one under /tmp), or point XDG_RUNTIME_DIR "
            "at a shorter folder",
        )
    _check_ancestors(real_base)
    path = real_base
    for part in below:
        path = path / part
        _private_dir(path)
    return path


def open_private(path: Path) -> int:
    """A file descriptor of `path` opened for writing, truncated, 0600, never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return fd


def write_private(path: Path, text: str) -> None:
    with os.fdopen(open_private(path), "w", encoding="utf-8") as fh:
        fh.write(text)


def tighten(folder: Path) -> None:
    """Files and folders an earlier run left in `folder` (the logs folder), made private."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for names, mode in ((dirnames, PRIVATE_DIR), (filenames, PRIVATE_FILE)):
            for name in names:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):  # os.walk does not follow them either
                    with contextlib.suppress(OSError):
                        os.chmod(path, mode)


def _private_dir(path: Path) -> None:
    """Create `path` 0700, or check the folder already there (it is kept as it is: a folder of
    the user's that no one else may write to is safe, and might be their home)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)  # past the umask
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise UnsafeRunDirError(
                f"run folder {path} is a symbolic link (to {os.readlink(path)}); serve follows "
                "no link in the folders it creates: whoever made it may control where the "
                "handler TorchServe runs is unpacked",
                fix=f"remove the link (rm {path}) and rerun, {_FIX_ELSEWHERE}",
            ) from None
        raise UnsafeRunDirError(
            f"run folder {path} exists and is {file_kind(info.st_mode)}, not a folder",
            fix=f"remove it (rm {path}) and rerun, {_FIX_ELSEWHERE}",
        ) from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise UnsafeRunDirError(
                f"run folder {path} belongs to {_owner(info.st_uid)}, not to you "
                f"({_owner(os.getuid())}): its owner could swap the handler TorchServe runs",
                fix=f"remove it (as its owner or root: rm -r {path}) and rerun, {_FIX_ELSEWHERE}",
            )
        if info.st_mode & 0o022:
            # A sticky folder (/tmp) is shared by design: never advise making it private.
            shared = bool(info.st_mode & stat.S_ISVTX)
            raise UnsafeRunDirError(
                f"run folder {path} has mode {_mode(info.st_mode)} (writable by "
                f"{_writers(info.st_mode)}{', a shared folder' if shared else ''}): others "
                "could swap the handler TorchServe runs",
                fix=(
                    "pass --run-dir DIR with a folder of your own (e.g. under your home), or "
                    "leave --run-dir out for a private one"
                )
                if shared
                else f"chmod 700 {path} and rerun, {_FIX_ELSEWHERE}",
            )
    finally:
        os.close(fd)


def _check_ancestors(folder: Path) -> None:
    """Every folder from `folder` up to / belongs to the user or root and is writable by no
    one else, unless it is sticky (as /tmp is): nobody else can then rename what is inside."""
    for path in (folder, *folder.parents):
        info = os.stat(path)
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeRunDirError(
                f"{path} is {file_kind(info.st_mode)}, not a folder: "
                "the run folder cannot go there",
                fix="pass --run-dir DIR with a folder of your own, or unset XDG_RUNTIME_DIR",
            )
        if info.st_uid not in (0, os.getuid()):
            raise UnsafeRunDirError(
                f"{path}, above the run folder, belongs to {_owner(info.st_uid)}: its owner "
                "could replace the run folder and the handler TorchServe runs",
                fix="pass --run-dir DIR under a folder of your own (or unset XDG_RUNTIME_DIR "
                "if it points there)",
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise UnsafeRunDirError(
                f"{path}, above the run folder, has mode {_mode(info.st_mode)} (writable by "
                f"{_writers(info.st_mode)}, not sticky): others could replace the run folder",
                fix=f"chmod go-w {path} (or chmod +t), or pass --run-dir DIR under a folder of "
                "your own",
            )


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _mode(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


def _writers(mode: int) -> str:
    who = [name for bit, name in ((0o020, "its group"), (0o002, "everyone")) if mode & bit]
    return " and ".join(who)
