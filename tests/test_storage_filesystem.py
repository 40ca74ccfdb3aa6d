"""The filesystem backend (a local path, or a PVC mounted here): atomic versions, resumable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.s3_stores_and_proxies import kserve_download, tree

from scibert_pack.errors import InputError, StorageError
from scibert_pack.storage.backend_choice import backend_for
from scibert_pack.storage.filesystem import FilesystemBackend
from scibert_pack.storage.local_store import LocalFile, scan_store
from scibert_pack.storage.sync import UploadResult, plan_upload, run_upload
from scibert_pack.storage.targets import parse_target

pytest_plugins = ["support.s3_fixtures"]


def upload(store: Path, backend: FilesystemBackend, **kwargs: object) -> UploadResult:
    delete = bool(kwargs.pop("delete", False))
    plan = plan_upload(scan_store(store), backend, delete=delete)
    return run_upload(plan, backend, **kwargs)  # type: ignore[arg-type]


def test_pvc_upload_lands_whole_in_the_mounted_claim(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    mount = tmp_path / "mnt"
    mount.mkdir()
    target = parse_target("pvc://model-claim/models/scibert")
    backend = backend_for(target, pvc_mount=mount)
    version = scan_store(store).version

    result = run_upload(plan_upload(scan_store(store), backend), backend)

    # A folder, so a trailing slash, as S3 storageUris have (README).
    assert result.plan.storage_uri == f"pvc://model-claim/models/scibert/{version}/"
    root = mount / "models" / "scibert"
    assert sorted(p.name for p in root.iterdir()) == [version, f"{version}.complete.json"]
    assert tree(root / version) == tree(store)
    record = json.loads((root / f"{version}.complete.json").read_text())
    assert record["storage_uri"] == result.plan.storage_uri
    # What KServe's initializer gives a pod for that directory (a local path: it links files).
    assert kserve_download(str(root / version), tmp_path / "dl") == tree(store)


def test_second_upload_copies_nothing(make_store: Callable[..., Path], tmp_path: Path) -> None:
    store = make_store()
    backend = FilesystemBackend(tmp_path / "dest")
    upload(store, backend)
    record = next((tmp_path / "dest").glob("*.complete.json"))
    mtime = record.stat().st_mtime_ns

    again = upload(store, backend)

    assert (again.uploaded, again.bytes_transferred) == ((), 0)
    assert record.stat().st_mtime_ns == mtime


class Interrupt(Exception):
    pass


def test_interrupted_copy_is_invisible_and_resumes(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    version = scan_store(store).version
    dest = tmp_path / "dest"
    backend = FilesystemBackend(dest)

    def stop(f: LocalFile) -> None:
        raise Interrupt(f.path)

    with pytest.raises(Interrupt):
        upload(store, backend, on_object=stop)

    # Only the hidden staging folder exists: nothing a reader of DEST/VERSION could see.
    assert sorted(p.name for p in dest.iterdir()) == [f".{version}.partial"]
    staged = tree(dest / f".{version}.partial")
    assert len(staged) == 1

    result = upload(store, backend)

    assert sorted(result.uploaded) == sorted(set(tree(store)) - set(staged))
    assert sorted(p.name for p in dest.iterdir()) == [version, f"{version}.complete.json"]
    assert tree(dest / version) == tree(store)


def test_temp_files_of_a_killed_copy_are_not_published(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    version = scan_store(store).version
    staging = tmp_path / "dest" / f".{version}.partial" / "model-store"
    staging.mkdir(parents=True)
    (staging / ".scibert.mar.x1y2.tmp").write_bytes(b"half a file")

    upload(store, FilesystemBackend(tmp_path / "dest"))

    assert tree(tmp_path / "dest" / version) == tree(store)


def test_changed_complete_version_is_refused(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    backend = FilesystemBackend(tmp_path / "dest")
    version = upload(store, backend).plan.store.version
    (tmp_path / "dest" / version / "build-report.json").write_text("{}")

    with pytest.raises(StorageError) as err:
        upload(store, backend)
    assert str(err.value) == (
        f"{tmp_path / 'dest' / version} differs from the store it was uploaded from, but a "
        "version is never changed in place; delete that directory and its .complete.json "
        "record, then rerun"
    )


LINKS = [
    pytest.param(lambda v: f".{v}.partial", id="staging-folder-is-a-link"),
    pytest.param(lambda v: v, id="version-folder-is-a-link"),
    pytest.param(lambda v: f".{v}.partial/model-store", id="link-inside-staging"),
]


@pytest.mark.parametrize("link_at", LINKS)
def test_links_where_a_version_goes_are_refused_before_anything_is_written(
    make_store: Callable[..., Path], tmp_path: Path, link_at: Callable[[str], str]
) -> None:
    """Someone who may write to the destination plants a link where the next version goes:
    followed, the copy lands outside, and a linked version can be changed after it is served."""
    store = make_store()
    version = scan_store(store).version
    victim = tmp_path / "victim"
    victim.mkdir()
    link = tmp_path / "dest" / link_at(version)
    link.parent.mkdir(parents=True)
    link.symlink_to(victim, target_is_directory=True)

    with pytest.raises(StorageError) as err:
        upload(store, FilesystemBackend(tmp_path / "dest"))
    assert str(err.value) == (
        f"{link} in the destination is a symbolic link: upload writes versions only into real "
        f"folders inside {tmp_path / 'dest'}; remove it (rm {link}) and rerun; upload makes its "
        "folders itself"
    )
    assert list(victim.iterdir()) == []
    assert not list((tmp_path / "dest").glob("*.complete.json"))


def test_delete_removes_only_what_uploads_made(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    backend = FilesystemBackend(dest)
    old = upload(make_store("v1", model_version="1.0"), backend).plan.store.version
    (dest / ".0.9-abc.partial").mkdir()
    (dest / "README.txt").write_text("not ours")
    new = upload(make_store("v2", model_version="2.0", payload=b"2"), backend, delete=True)

    assert sorted(new.deleted) == sorted(
        str(dest / n) for n in (old, f"{old}.complete.json", ".0.9-abc.partial")
    )
    version = new.plan.store.version
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["README.txt", version, f"{version}.complete.json"]
    )


def test_unversioned_store_in_the_destination_is_refused(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    dest = make_store("already-a-store")
    with pytest.raises(StorageError, match=r"already holds an unversioned model store"):
        plan_upload(scan_store(make_store()), FilesystemBackend(dest))


def test_empty_files_are_kept_on_a_filesystem_with_a_warning(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store(model_version=None)
    (store / "config" / "empty.txt").write_bytes(b"")
    (store / "model-store" / "extra").mkdir()
    (store / "model-store" / "extra" / "empty.json").write_bytes(b"")
    version = scan_store(store).version

    result = upload(store, FilesystemBackend(tmp_path / "dest"))

    assert result.plan.warnings == (
        f"model store {store} has empty files: config/empty.txt, model-store/extra/empty.json; "
        f"{tmp_path / 'dest' / version} keeps them, but KServe's S3 downloader skips 0-byte "
        "objects, so the same store served from S3 would lack them (and `scibert-pack upload` "
        "to S3 refuses it): give them content or remove them if the model needs them",
    )
    assert tree(tmp_path / "dest" / version) == tree(store)


def test_no_empty_files_no_warning(make_store: Callable[..., Path], tmp_path: Path) -> None:
    assert upload(make_store(), FilesystemBackend(tmp_path / "dest")).plan.warnings == ()


def _inside_store(store: Path, tmp_path: Path) -> FilesystemBackend:
    return FilesystemBackend(store / "versions")


def _the_store_itself(store: Path, tmp_path: Path) -> FilesystemBackend:
    return FilesystemBackend(store)


def _hidden_folder_inside(store: Path, tmp_path: Path) -> FilesystemBackend:
    return FilesystemBackend(store / ".uploads")


def _symlink_into_store(store: Path, tmp_path: Path) -> FilesystemBackend:
    (store / "model-store" / "v").mkdir()
    (tmp_path / "link").symlink_to(store / "model-store")
    dest = tmp_path / "link" / "v"
    return FilesystemBackend(dest)


def _pvc_mount_inside_store(store: Path, tmp_path: Path) -> FilesystemBackend:
    backend = backend_for(parse_target("pvc://claim/versions"), pvc_mount=store)
    assert isinstance(backend, FilesystemBackend)
    return backend


def _store_inside_destination(store: Path, tmp_path: Path) -> FilesystemBackend:
    return FilesystemBackend(tmp_path)


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        (
            _inside_store,
            "destination {store}/versions is inside the model store {store}: the next upload "
            "of that store would publish a version holding this one; upload to a folder "
            "outside {store}, e.g. {store}-versions",
        ),
        (
            _the_store_itself,
            "destination {store} is the model store {store}: the next upload of that store "
            "would publish a version holding this one; upload to a folder outside {store}, "
            "e.g. {store}-versions",
        ),
        (_hidden_folder_inside, "destination {store}/.uploads is inside the model store"),
        (_symlink_into_store, "destination {tmp}/link/v is inside the model store {store}:"),
        (
            _pvc_mount_inside_store,
            "destination pvc://claim/versions (mounted at {store}/versions) is inside the "
            "model store {store}:",
        ),
        (
            _store_inside_destination,
            "model store {store} is inside the destination {tmp}: its files would sit among "
            "the uploaded versions, and a reader of the destination would see both; upload to "
            "a folder that does not hold the store, e.g. {store}-versions",
        ),
    ],
    ids=["inside", "itself", "hidden-inside", "symlink-inside", "pvc-mount-inside", "around"],
)
def test_destination_and_store_must_not_nest(
    make_store: Callable[..., Path],
    tmp_path: Path,
    destination: Callable[[Path, Path], FilesystemBackend],
    message: str,
) -> None:
    store = make_store()
    backend = destination(store, tmp_path)
    before = tree(store)

    with pytest.raises(InputError) as err:
        plan_upload(scan_store(store), backend)

    assert str(err.value).startswith(message.format(store=store, tmp=tmp_path))
    assert tree(store) == before  # refused before anything was written


def test_destination_beside_the_store_is_fine(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    result = upload(store, FilesystemBackend(tmp_path / "out-versions"))
    assert tree(tmp_path / "out-versions" / result.plan.store.version) == tree(store)


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (None, r"pvc://claim/p needs the claim mounted on this machine; pass --pvc-mount DIR"),
        ("missing", r"--pvc-mount .*missing is not a directory; mount claim 'claim' there"),
    ],
    ids=["no-mount", "mount-missing"],
)
def test_pvc_without_a_usable_mount(tmp_path: Path, mount: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        backend_for(parse_target("pvc://claim/p"), pvc_mount=tmp_path / mount if mount else None)
