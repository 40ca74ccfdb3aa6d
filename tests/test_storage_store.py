"""STORAGE_URI parsing and reading the store folder: names, versions, one error per bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from scibert_pack.errors import InputError, StoreError
from scibert_pack.storage.kubectl_steps import kubectl_steps
from scibert_pack.storage.local_store import read_store
from scibert_pack.storage.targets import LocalTarget, PvcTarget, S3Target, Target, parse_target

pytest_plugins = ["s3_fixtures"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://models/scibert", S3Target("models", "scibert")),
        ("s3://models/scibert/", S3Target("models", "scibert")),
        ("s3://models/a/b/c", S3Target("models", "a/b/c")),
        ("s3://models", S3Target("models", "")),
        ("pvc://model-claim/scibert", PvcTarget("model-claim", "scibert")),
        ("pvc://model-claim", PvcTarget("model-claim", "")),
        ("/srv/models", LocalTarget(Path("/srv/models"))),
        ("file:///srv/models", LocalTarget(Path("/srv/models"))),
    ],
    ids=["s3", "s3-trailing-slash", "s3-deep", "s3-root", "pvc", "pvc-root", "path", "file"],
)
def test_parse_target(uri: str, expected: Target) -> None:
    assert parse_target(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "gs://models/scibert",
            "unknown storage scheme 'gs' in 'gs://models/scibert'; expected s3://bucket/prefix, "
            "pvc://claim/path or a local directory path (GCS and Azure are not supported yet)",
        ),
        (
            "s3://My_Bucket/x",
            "'s3://My_Bucket/x' names no valid S3 bucket (got 'My_Bucket'); bucket names are "
            "3-63 lowercase letters, digits, dots or dashes, e.g. s3://my-models/scibert",
        ),
        (
            "pvc://Claim/x",
            "'pvc://Claim/x' names no valid PersistentVolumeClaim (got 'Claim'); claim names are "
            "lowercase letters, digits, dots or dashes, e.g. pvc://model-store/scibert",
        ),
        (
            "s3://models/a/../b",
            "'s3://models/a/../b' has an empty, '.' or '..' path segment; write the path "
            "plainly, e.g. s3://my-models/scibert",
        ),
        (
            "s3://models/a//b",
            "'s3://models/a//b' has an empty, '.' or '..' path segment; write the path "
            "plainly, e.g. s3://my-models/scibert",
        ),
    ],
    ids=["unknown-scheme", "bad-bucket", "bad-claim", "dot-dot", "double-slash"],
)
def test_bad_storage_uri(uri: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_target(uri)
    assert str(err.value) == message


def test_version_names_model_version_and_content(make_store: Callable[..., Path]) -> None:
    a = read_store(make_store("a", model_version="1.0 beta/2"))
    b = read_store(make_store("b", model_version="1.0 beta/2"))
    c = read_store(make_store("c", model_version="1.0 beta/2", payload=b"other"))
    bare = read_store(make_store("d", model_version=None))

    assert a.version == b.version and a.version.startswith("1.0-beta-2-")
    assert c.version != a.version
    assert bare.version == bare.tree_sha256[:12]
    assert [f.path for f in a.files] == [
        "build-report.json",
        "config/config.properties",
        "model-store/scibert.mar",
    ]


def test_hidden_files_are_not_part_of_the_store(make_store: Callable[..., Path]) -> None:
    store = make_store()
    before = read_store(store)
    (store / ".DS_Store").write_bytes(b"junk")
    (store / "model-store" / ".scibert.mar.swp").write_bytes(b"junk")
    assert read_store(store) == before


# One fixture-like breaker per broken store: (what it does, the message that names the fix).
def _no_folder(store: Path) -> None:
    shutil.rmtree(store)


def _no_config(store: Path) -> None:
    (store / "config" / "config.properties").unlink()


def _no_archive(store: Path) -> None:
    (store / "model-store" / "scibert.mar").unlink()


def _bad_report(store: Path) -> None:
    (store / "build-report.json").write_text("{not json")


def _other_schema(store: Path) -> None:
    (store / "build-report.json").write_text(json.dumps({"schema": "something/v9"}))


def _edited_after_build(store: Path) -> None:
    (store / "config" / "config.properties").write_text("edited=true\n")


_FIX = "point OUT at the folder `scibert-pack build MODEL_DIR OUT` wrote, or rebuild it"


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_no_folder, "model store {store} is not a folder; " + _FIX),
        (_no_config, "model store {store} has no config/config.properties; " + _FIX),
        (
            _no_archive,
            "model store {store} has no model archive in model-store/ "
            "(looked for *.mar, *.tar.gz or a model folder); " + _FIX,
        ),
        # The JSON parser's own words stand where the ... is.
        (_bad_report, "{store}/build-report.json is not readable JSON (...); " + _FIX),
        (
            _other_schema,
            "{store}/build-report.json has schema 'something/v9', expected "
            "'scibert-pack/build-report/v1'; rebuild the store with this version of "
            "`scibert-pack build`",
        ),
        (
            _edited_after_build,
            "model store {store} no longer matches its build-report.json: "
            "config/config.properties (sha256 or size differs); rebuild the store with "
            "`scibert-pack build` instead of editing it",
        ),
    ],
    ids=["no-folder", "no-config", "no-archive", "bad-report", "other-schema", "edited"],
)
def test_broken_store(
    make_store: Callable[..., Path], breaker: Callable[[Path], None], message: str
) -> None:
    store = make_store()
    breaker(store)
    with pytest.raises(StoreError) as err:
        read_store(store)
    head, _, tail = message.format(store=store).partition("...")
    assert str(err.value).startswith(head)
    assert str(err.value).endswith(tail)
    if not tail:
        assert str(err.value) == head


def test_kubectl_steps_copy_check_then_rename(make_store: Callable[..., Path]) -> None:
    store = read_store(make_store())
    steps = kubectl_steps(store, PvcTarget("model-claim", "models/scibert"))
    staging = f"/mnt/pvc/models/scibert/.{store.version}.partial"
    final = f"/mnt/pvc/models/scibert/{store.version}"
    assert "        claimName: model-claim\n" in steps
    assert f"kubectl cp {store.root} scibert-pack-copy:{staging}\n" in steps
    assert f"kubectl exec -i scibert-pack-copy -- sh -c 'cd {staging} && sha256sum -c -'" in steps
    for f in store.files:
        assert f"{f.sha256}  {f.path}\n" in steps
    assert f"sh -c 'test ! -e {final} && mv {staging} {final}'" in steps
    assert steps.index("kubectl cp") < steps.index("sha256sum") < steps.index("mv ")
    assert steps.endswith(f"# pvc://model-claim/models/scibert/{store.version}\n")
