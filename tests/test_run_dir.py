"""The run folder of `serve` is private or refused: another user who created it first, made it
writable, or put a link or a file in its place cannot get their code run (issue 11, item 1)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.errors import InputError, UnsafeRunDirError
from scibert_pack.serving.run_dir import default_run_dir, secure_run_dir, tighten

OTHER_UID = 65534  # tests run as root: another user's folder is one chowned to nobody
ME = f"uid {os.getuid()} ({pwd.getpwuid(os.getuid()).pw_name})"
OTHER = f"uid {OTHER_UID} ({pwd.getpwuid(OTHER_UID).pw_name})"
PORT = 8085


def _user(base: Path) -> Path:
    return base / f"scibert-pack-{os.getuid()}"


def _mkdir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir()
    path.chmod(mode)  # past the umask
    return path


def other_owner(base: Path) -> Path:
    os.chown(_mkdir(_user(base)), OTHER_UID, OTHER_UID)
    return _user(base)


def other_owner_run_folder(base: Path) -> Path:
    run = _mkdir(_user(base)) / f"serve-{PORT}"
    os.chown(_mkdir(run), OTHER_UID, OTHER_UID)
    return run


def group_writable(base: Path) -> Path:
    return _mkdir(_user(base), 0o770)


def world_writable(base: Path) -> Path:
    return _mkdir(_user(base), 0o777)


def sticky_world_writable(base: Path) -> Path:
    # Sticky or not, a folder of ours that others may write to is not private.
    return _mkdir(_user(base), 0o1777)


def link_as_run_folder(base: Path) -> Path:
    elsewhere = _mkdir(base.parent / "elsewhere")
    (_mkdir(_user(base)) / f"serve-{PORT}").symlink_to(elsewhere)
    return _user(base) / f"serve-{PORT}"


def link_as_parent(base: Path) -> Path:
    elsewhere = _mkdir(base.parent / "elsewhere")
    _user(base).symlink_to(elsewhere)
    return _user(base)


def dangling_link(base: Path) -> Path:
    _user(base).symlink_to(base.parent / "not-yet")
    return _user(base)


def file_as_run_folder(base: Path) -> Path:
    (_mkdir(_user(base)) / f"serve-{PORT}").write_text("x")
    return _user(base) / f"serve-{PORT}"


def fifo_as_run_folder(base: Path) -> Path:
    os.mkfifo(_mkdir(_user(base)) / f"serve-{PORT}")
    return _user(base) / f"serve-{PORT}"


def base_of_other_user(base: Path) -> Path:
    os.chown(base, OTHER_UID, OTHER_UID)
    return base


def base_world_writable(base: Path) -> Path:
    base.chmod(0o777)
    return base


_LINK_FIX = "and rerun, or pass --run-dir DIR with a folder of your own"
UNSAFE: list[tuple[str, Callable[[Path], Path], str]] = [
    (
        "other-owner",
        other_owner,
        f"run folder {{bad}} belongs to {OTHER}, not to you ({ME}): its owner could swap the "
        f"handler TorchServe runs; remove it (as its owner or root: rm -r {{bad}}) {_LINK_FIX}",
    ),
    (
        "other-owner-run-folder",
        other_owner_run_folder,
        f"run folder {{bad}} belongs to {OTHER}, not to you ({ME}): its owner could swap the "
        f"handler TorchServe runs; remove it (as its owner or root: rm -r {{bad}}) {_LINK_FIX}",
    ),
    (
        "group-writable",
        group_writable,
        "run folder {bad} has mode 0770 (writable by its group): others could swap the handler "
        f"TorchServe runs; chmod 700 {{bad}} {_LINK_FIX}",
    ),
    (
        "world-writable",
        world_writable,
        "run folder {bad} has mode 0777 (writable by its group and everyone): others could "
        f"swap the handler TorchServe runs; chmod 700 {{bad}} {_LINK_FIX}",
    ),
    (
        "sticky-world-writable",
        sticky_world_writable,
        # A shared folder such as /tmp itself: never advise chmod 700 on it.
        "run folder {bad} has mode 1777 (writable by its group and everyone, a shared folder): "
        "others could swap the handler TorchServe runs; pass --run-dir DIR with a folder of "
        "your own (e.g. under your home), or leave --run-dir out for a private one",
    ),
    (
        "link-as-run-folder",
        link_as_run_folder,
        "run folder {bad} is a symbolic link (to {elsewhere}); serve follows no link in the "
        "folders it creates: whoever made it may control where the handler TorchServe runs is "
        f"unpacked; remove the link (rm {{bad}}) {_LINK_FIX}",
    ),
    (
        "link-as-parent",
        link_as_parent,
        "run folder {bad} is a symbolic link (to {elsewhere}); serve follows no link in the "
        "folders it creates: whoever made it may control where the handler TorchServe runs is "
        f"unpacked; remove the link (rm {{bad}}) {_LINK_FIX}",
    ),
    (
        "dangling-link",
        dangling_link,
        "run folder {bad} is a symbolic link (to {not_yet}); serve follows no link in the "
        "folders it creates: whoever made it may control where the handler TorchServe runs is "
        f"unpacked; remove the link (rm {{bad}}) {_LINK_FIX}",
    ),
    (
        "file",
        file_as_run_folder,
        f"run folder {{bad}} exists and is a file, not a folder; remove it (rm {{bad}}) {_LINK_FIX}",
    ),
    (
        "fifo",
        fifo_as_run_folder,
        f"run folder {{bad}} exists and is a FIFO, not a folder; remove it (rm {{bad}}) {_LINK_FIX}",
    ),
    (
        "base-of-another-user",
        base_of_other_user,
        f"{{bad}}, above the run folder, belongs to {OTHER}: its owner could replace the run "
        "folder and the handler TorchServe runs; pass --run-dir DIR under a folder of your own "
        "(or unset XDG_RUNTIME_DIR if it points there)",
    ),
    (
        "base-world-writable-not-sticky",
        base_world_writable,
        "{bad}, above the run folder, has mode 0777 (writable by its group and everyone, not "
        "sticky): others could replace the run folder; chmod go-w {bad} (or chmod +t), or pass "
        "--run-dir DIR under a folder of your own",
    ),
]


@pytest.fixture
def base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """$XDG_RUNTIME_DIR for the test: where the default run folders go (a short path: the
    worker sockets in a run folder have 107 bytes)."""
    short = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    folder = _mkdir(short / "runtime")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(short, ignore_errors=True)


@pytest.mark.parametrize(
    ("arrange", "message"), [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE]
)
def test_unsafe_run_folder_is_refused(
    base: Path, arrange: Callable[[Path], Path], message: str
) -> None:
    bad = arrange(base)
    run_dir = default_run_dir(PORT)
    assert run_dir == _user(base) / f"serve-{PORT}"
    before = sorted(str(p) for p in base.parent.rglob("*"))
    with pytest.raises(UnsafeRunDirError) as caught:
        secure_run_dir(run_dir)
    assert caught.value.exit_code == 2
    assert str(caught.value) == message.format(
        bad=bad, elsewhere=base.parent / "elsewhere", not_yet=base.parent / "not-yet"
    )
    # Refused before anything was written, and nothing was made private that was not ours.
    assert sorted(str(p) for p in base.parent.rglob("*")) == before


@pytest.mark.parametrize(
    "arrange",
    [
        lambda base: None,
        lambda base: _mkdir(_user(base), 0o755),  # kept as it is: no one else may write
        lambda base: base.chmod(0o1777),  # a sticky shared folder, as /tmp
    ],
    ids=["fresh", "existing-0755", "sticky-base"],
)
def test_run_folder_is_made_private(base: Path, arrange: Callable[[Path], object]) -> None:
    existing = arrange(base)
    made = secure_run_dir(default_run_dir(PORT))
    assert made == _user(base).resolve() / f"serve-{PORT}"
    for folder, mode in ((made, 0o700), (made.parent, 0o755 if existing else 0o700)):
        info = os.lstat(folder)
        assert stat.S_ISDIR(info.st_mode)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (mode, os.getuid())


def test_explicit_run_dir_gets_its_missing_folders_private(tmp_path: Path) -> None:
    made = secure_run_dir(tmp_path / "a" / "b" / "run")
    assert made == tmp_path.resolve() / "a" / "b" / "run"
    for folder in (made, made.parent, made.parent.parent):
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700


def test_explicit_run_dir_under_another_users_folder_is_refused(tmp_path: Path) -> None:
    theirs = _mkdir(tmp_path / "theirs", 0o755)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeRunDirError) as caught:
        secure_run_dir(theirs / "run")
    assert str(caught.value).startswith(
        f"{theirs}, above the run folder, belongs to {OTHER}: its owner could replace"
    )
    assert not (theirs / "run").exists()


def test_serve_refuses_a_taken_over_run_folder_before_starting(
    tiny_bert: Path, tmp_path: Path, base: Path
) -> None:
    build(tiny_bert, BuildSettings(name="m"), tmp_path / "store")
    bad = other_owner(base)
    ports = ["--port", "0", "--management-port", "0", "--metrics-port", "0", "--grpc-port", "0"]
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "store"), *ports, "-q"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: run folder {bad} belongs to {OTHER}, not to you ({ME}): its owner could swap "
        f"the handler TorchServe runs; remove it (as its owner or root: rm -r {bad}) and rerun, "
        "or pass --run-dir DIR with a folder of your own\n"
    )
    assert list(bad.iterdir()) == []


def test_run_folder_too_long_for_the_worker_sockets_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / ("d" * 100) / "run"
    with pytest.raises(InputError) as caught:
        secure_run_dir(run_dir)
    socket_path = f"{tmp_path.resolve()}/{'d' * 100}/run/tmp/.ts.sock.9000"
    assert str(caught.value) == (
        f"run folder {tmp_path.resolve()}/{'d' * 100}/run is too long a path: TorchServe's "
        f"workers listen on Unix sockets in it ({socket_path}, {len(socket_path)} bytes), and a "
        "socket path has room for 107 bytes; pass a shorter --run-dir (e.g. one under /tmp), "
        "or point XDG_RUNTIME_DIR at a shorter folder"
    )
    assert not (tmp_path / ("d" * 100)).exists()


def test_serve_never_empties_a_folder_it_did_not_make(tiny_bert: Path, tmp_path: Path) -> None:
    """`--run-dir ~` must not cost the user ~/tmp: a folder holding anything serve does not
    write is refused before anything in it is touched."""
    build(tiny_bert, BuildSettings(name="m"), tmp_path / "store")
    home = _mkdir(tmp_path / "home", 0o755)
    (home / "notes.txt").write_text("mine")
    (home / "tmp").mkdir()
    (home / "tmp" / "draft.txt").write_text("mine too")
    ports = ["--port", "0", "--management-port", "0", "--metrics-port", "0", "--grpc-port", "0"]
    result = CliRunner().invoke(
        cli, ["serve", str(tmp_path / "store"), *ports, "--run-dir", str(home), "-q"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: run folder {home} holds files serve did not write (notes.txt): serve empties "
        "parts of its run folder (tmp/, the key file), so it uses only a new folder or one it "
        f"made; pass --run-dir with a new or empty folder, e.g. --run-dir {home}/scibert-pack-run\n"
    )
    assert (home / "tmp" / "draft.txt").read_text() == "mine too"
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt", "tmp"]
    assert stat.S_IMODE(home.stat().st_mode) == 0o755


def test_logs_an_earlier_run_left_readable_are_made_private(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "old").mkdir(parents=True)
    for path in (logs / "ts_log.log", logs / "old" / "model_log.log"):
        path.write_text("x")
        path.chmod(0o644)
    (logs / "old").chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("not a log")
    outside.chmod(0o644)
    (logs / "link").symlink_to(outside)
    (logs / "dirlink").symlink_to(tmp_path)
    tighten(logs)
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in logs.rglob("*") if not p.is_symlink()}
    assert modes == {"ts_log.log": 0o600, "old": 0o700, "model_log.log": 0o600}
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # a link's target is left alone
