"""STORAGE_URI parsing and reading the store folder: names, versions, one error per bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.s3_stores_and_proxies import ScriptRun, kserve_download, run_with_fake_kubectl, tree

from scibert_pack.errors import InputError, StoreError
from scibert_pack.storage.filesystem import FilesystemBackend
from scibert_pack.storage.kubectl_steps import copy_pod_manifest, kubectl_steps, upload_steps_text
from scibert_pack.storage.local_store import scan_store
from scibert_pack.storage.sync import completion_record, plan_upload
from scibert_pack.storage.targets import (
    LocalTarget,
    PvcTarget,
    S3Target,
    Target,
    parse_target,
    redact_uri,
)

pytest_plugins = ["support.s3_fixtures"]


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


_CREDENTIALS = (
    "carries credentials (the part before '@'); a URI ends up in shell history, logs and "
    "manifests, so keys never go there; "
)
_S3_FIX = (
    "remove them and let boto3's credential chain find them: set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or name a profile from ~/.aws/credentials with --profile or "
    "AWS_PROFILE (see `aws configure`)"
)
_QUERY = (
    "has a query or fragment ('?' or '#'), which a storage URI does not take; drop it: "
    "KServe's storage initializer cuts a storageUri at '?' or '#' as well (a presigned "
    "https:// URL expires and is a credential: upload the store and give its s3:// or pvc:// "
    "storageUri)"
)


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
            "lowercase letters, digits, dots or dashes, up to 63, e.g. s3://my-models/scibert",
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
        ("s3://AKIAEXAMPLE:topsecret@bucket/p", f"'s3://***@bucket/p' {_CREDENTIALS}{_S3_FIX}"),
        # AWS secrets hold '/' and '+': the '@' comes after a '/', yet it ends the userinfo.
        ("s3://AKIAEXAMPLE:top/secret+x@bucket/p", f"'s3://***@bucket/p' {_CREDENTIALS}{_S3_FIX}"),
        ("s3://AKIAEXAMPLE@bucket/p", f"'s3://***@bucket/p' {_CREDENTIALS}{_S3_FIX}"),
        ("s3://AKIAEXAMPLE:top?secret@bucket/p", f"'s3://***@bucket/p' {_CREDENTIALS}{_S3_FIX}"),
        (
            "pvc://user:topsecret@claim/p",
            f"'pvc://***@claim/p' {_CREDENTIALS}remove them: a pvc:// URI takes no credentials",
        ),
        (
            "gs://AKIAEXAMPLE:topsecret@b/p",
            f"'gs://***@b/p' {_CREDENTIALS}remove them: a gs:// URI takes no credentials",
        ),
        ("s3://models/scibert?X-Amz-Signature=topsecret", f"'s3://models/scibert?...' {_QUERY}"),
        ("s3://models/scibert#v1", f"'s3://models/scibert#...' {_QUERY}"),
    ],
    ids=[
        "unknown-scheme",
        "bad-bucket",
        "bad-claim",
        "dot-dot",
        "double-slash",
        "s3-key-and-secret",
        "s3-secret-with-slash",
        "s3-key-only",
        "secret-with-question-mark",
        "pvc-credentials",
        "unknown-scheme-credentials",
        "query",
        "fragment",
    ],
)
def test_bad_storage_uri(uri: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_target(uri)
    assert str(err.value) == message
    for secret in ("topsecret", "AKIAEXAMPLE", "top/secret", "secret+x"):
        assert secret not in str(err.value)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("s3://models/scibert/", "s3://models/scibert/"),
        ("s3://k:s@models/scibert", "s3://***@models/scibert"),
        ("s3://k:s/x@models/a@b", "s3://***@models/a@b"),
        ("s3://models/team@corp/m", "s3://models/team@corp/m"),
        ("https://example.com/m.tgz?X-Amz-Signature=s#frag", "https://example.com/m.tgz?..."),
        ("http://user:pw@minio.local:9000", "http://***@minio.local:9000"),
        ("/srv/models", "/srv/models"),
    ],
    ids=["plain", "userinfo", "secret-with-slash", "at-in-key", "query", "endpoint", "path"],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_key_prefix_with_at_sign_is_no_credential() -> None:
    assert parse_target("s3://models/team@corp/m") == S3Target("models", "team@corp/m")


def test_version_names_model_version_and_content(make_store: Callable[..., Path]) -> None:
    a = scan_store(make_store("a", model_version="1.0 beta/2"))
    b = scan_store(make_store("b", model_version="1.0 beta/2"))
    c = scan_store(make_store("c", model_version="1.0 beta/2", payload=b"other"))
    bare = scan_store(make_store("d", model_version=None))

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
    before = scan_store(store)
    (store / ".DS_Store").write_bytes(b"junk")
    (store / "model-store" / ".scibert.mar.swp").write_bytes(b"junk")
    assert scan_store(store) == before


# One fixture-like breaker per broken store: (what it does, the message that names the fix).
def _no_folder(store: Path) -> None:
    shutil.rmtree(store)


def _no_config(store: Path) -> None:
    (store / "config" / "config.properties").unlink()


def _no_archive(store: Path) -> None:
    (store / "model-store" / "scibert.mar").unlink()


def _empty_model_folder(store: Path) -> None:
    (store / "model-store" / "scibert.mar").unlink()
    (store / "model-store" / "scibert").mkdir()


def _folders_without_manifest(store: Path) -> None:
    (store / "model-store" / "scibert.mar").unlink()
    (store / "model-store" / "scibert" / "MAR-INF").mkdir(parents=True)
    (store / "model-store" / "scibert" / "model.safetensors").write_bytes(b"w")
    (store / "model-store" / "notes").mkdir()


def _bad_report(store: Path) -> None:
    (store / "build-report.json").write_text("{not json")


def _other_schema(store: Path) -> None:
    (store / "build-report.json").write_text(json.dumps({"schema": "something/v9"}))


def _edited_after_build(store: Path) -> None:
    (store / "config" / "config.properties").write_text("edited=true\n")


_FIX = (
    "point OUT at the folder `scibert-pack build MODEL_DIR --model-name NAME -o OUT` wrote, or "
    "rebuild it"
)
_LOOKED = (
    "model store {store} has no model archive in model-store/ (looked for *.mar, *.tar.gz or "
    "a model folder holding MAR-INF/MANIFEST.json or model-config.yaml"
)


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_no_folder, "model store {store} is not a folder; " + _FIX),
        (_no_config, "model store {store} has no config/config.properties; " + _FIX),
        (_no_archive, _LOOKED + "); " + _FIX),
        (_empty_model_folder, _LOOKED + "; scibert/ holds neither); " + _FIX),
        (_folders_without_manifest, _LOOKED + "; notes/, scibert/ hold neither); " + _FIX),
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
    ids=[
        "no-folder",
        "no-config",
        "no-archive",
        "empty-model-folder",
        "folders-without-manifest",
        "bad-report",
        "other-schema",
        "edited",
    ],
)
def test_broken_store(
    make_store: Callable[..., Path], breaker: Callable[[Path], None], message: str
) -> None:
    store = make_store()
    breaker(store)
    with pytest.raises(StoreError) as err:
        scan_store(store)
    head, _, tail = message.format(store=store).partition("...")
    assert str(err.value).startswith(head)
    assert str(err.value).endswith(tail)
    if not tail:
        assert str(err.value) == head


@pytest.mark.parametrize(
    "marker",
    ["MAR-INF/MANIFEST.json", "model-config.yaml"],
    ids=["manifest", "model-config"],
)
def test_no_archive_model_folder_is_a_model(make_store: Callable[..., Path], marker: str) -> None:
    store = make_store(model_version=None)
    (store / "model-store" / "scibert.mar").unlink()
    (store / "model-store" / "scibert" / marker).parent.mkdir(parents=True, exist_ok=True)
    (store / "model-store" / "scibert" / marker).write_text("{}")
    assert f"model-store/scibert/{marker}" in [f.path for f in scan_store(store).files]


def test_kubectl_steps_are_exact(make_store: Callable[..., Path]) -> None:
    store = scan_store(make_store())
    v = store.version
    copy = kubectl_steps(store, PvcTarget("model-claim", "models/scibert"))
    uri = f"pvc://model-claim/models/scibert/{v}/"  # a folder: a trailing slash
    parent = "/mnt/pvc/models/scibert"
    record = completion_record(store, uri)
    pod = "kubectl exec scibert-pack-copy -- sh -c"
    pod_i = "kubectl exec -i scibert-pack-copy -- sh -c"

    assert (copy.storage_uri, copy.record_uri, copy.warnings) == (
        uri,
        f"pvc://model-claim/models/scibert/{v}.complete.json",
        (),
    )
    apply, *commands = [step.command for step in copy.steps]
    head, body = apply.split("\n", 1)
    assert (head, body.rsplit("\n", 1)[1]) == ("kubectl apply -f - <<'EOF'", "EOF")
    assert yaml.safe_load(body.rsplit("\n", 1)[0]) == copy_pod_manifest(
        "scibert-pack-copy", "model-claim"
    )
    assert commands == [
        "kubectl wait --for=condition=Ready pod/scibert-pack-copy --timeout=300s",
        f"{pod} 'set -e; mkdir -p {parent}; cd {parent}; "
        f'if [ -e {v} ]; then echo "models/scibert/{v} exists already: it is complete if '
        f'{v}.complete.json is there, else delete it and rerun" >&2; exit 1; fi; '
        'if [ -e config/config.properties ]; then echo "models/scibert holds an unversioned '
        'model store: a version beneath it would be served along with it" >&2; exit 1; fi; '
        f"rm -rf .{v}.partial; mkdir .{v}.partial'",
        # Exactly the listed files, streamed: nothing else in OUT reaches the claim.
        f"tar -chf - -C {store.root} -- build-report.json config/config.properties "
        f"model-store/scibert.mar | {pod_i} 'cd {parent}/.{v}.partial && tar -xf - && "
        "chmod -R a+rX .'",
        f"{pod_i} 'cd {parent}/.{v}.partial && sha256sum -c - && n=$(find . -type f | wc -l) "
        '&& { [ $n -eq 3 ] || { echo "expected 3 files, found $n" >&2; exit 1; }; }\' '
        "<<'EOF'\n" + "".join(f"{f.sha256}  {f.path}\n" for f in store.files) + "EOF",
        f"{pod} 'cd {parent} && [ ! -e {v} ] && mv .{v}.partial {v}'",
        f'{pod_i} \'cd {parent} && cat > .{v}.complete.json.tmp && printf "%s  %s\\n" '
        f"{hashlib.sha256(record).hexdigest()} .{v}.complete.json.tmp | sha256sum -c - && "
        f"mv .{v}.complete.json.tmp {v}.complete.json' <<'EOF'\n" + record.decode() + "EOF",
        "kubectl delete pod scibert-pack-copy",
    ]


def test_kubectl_steps_as_a_script(make_store: Callable[..., Path]) -> None:
    store = scan_store(make_store())
    target = PvcTarget("model-claim", "models/scibert")
    copy = kubectl_steps(store, target)
    text = upload_steps_text(copy, target)
    assert text.startswith(
        f"# No --pvc-mount given: nothing was copied. To put {store.root} on "
        "pvc://model-claim/models/scibert,\n"
    )
    for n, step in enumerate(copy.steps, 1):
        assert f"\n# {n}. {step.title}\n{step.command}\n" in text
    assert text.endswith(
        f"# storageUri for the InferenceService:\n# pvc://model-claim/models/scibert/{store.version}/\n"
    )


def _run_steps(store: Path, claim: Path, workdir: Path) -> ScriptRun:
    target = PvcTarget("model-claim", "models/scibert")
    copy = kubectl_steps(scan_store(store), target, mount=str(claim))
    return run_with_fake_kubectl(upload_steps_text(copy, target), workdir)


def test_kubectl_steps_fill_the_claim_as_a_mounted_upload_would(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    """The printed script, run with kubectl exec standing for a shell here: what lands in the
    claim is what `upload --pvc-mount` would have written, record included."""
    store = make_store()
    (store / ".DS_Store").write_bytes(b"junk")  # hidden: no part of the store
    (store / "model-store" / ".scibert.mar.swp").write_bytes(b"junk")
    local = scan_store(store)
    claim = tmp_path / "claim"

    done = _run_steps(store, claim, tmp_path / "run")

    assert done.returncode == 0, done.stderr
    assert done.kubectl == ["apply", "wait", "exec", "exec", "exec", "exec", "exec", "delete"]
    root = claim / "models" / "scibert"
    version = root / local.version
    assert sorted(p.name for p in root.iterdir()) == [
        local.version,
        f"{local.version}.complete.json",
    ]
    assert tree(version) == {f.path: f.source.read_bytes() for f in local.files}
    assert set(tree(store)) - set(tree(version)) == {".DS_Store", "model-store/.scibert.mar.swp"}
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in version.rglob("*"))
    uri = f"pvc://model-claim/models/scibert/{local.version}/"
    assert (root / f"{local.version}.complete.json").read_bytes() == completion_record(local, uri)
    # The filesystem backend, pointed at the same claim, finds the version complete.
    backend = FilesystemBackend(root, uri_base="pvc://model-claim/models/scibert")
    plan = plan_upload(local, backend)
    assert (plan.storage_uri, plan.recorded, plan.to_upload) == (uri, True, ())
    assert kserve_download(str(version), tmp_path / "dl") == tree(version)


def _modify_a_file(store: Path, claim: Path) -> None:
    mar = store / "model-store" / "scibert.mar"
    mar.write_bytes(bytes(b ^ 1 for b in mar.read_bytes()))  # same size, other bytes


def _version_there(store: Path, claim: Path) -> None:
    (claim / "models" / "scibert" / scan_store(store).version).mkdir(parents=True)


def _unversioned_store_there(store: Path, claim: Path) -> None:
    (claim / "models" / "scibert" / "config").mkdir(parents=True)
    (claim / "models" / "scibert" / "config" / "config.properties").write_text("x=1\n")


@pytest.mark.parametrize(
    ("breaker", "exec_calls", "message"),
    [
        (_modify_a_file, 3, "model-store/scibert.mar: FAILED"),
        (_version_there, 1, "models/scibert/{version} exists already: it is complete if"),
        (_unversioned_store_there, 1, "models/scibert holds an unversioned model store"),
    ],
    ids=["file-changed-after-printing", "version-there", "unversioned-store-there"],
)
def test_kubectl_steps_stop_before_publishing_anything_wrong(
    make_store: Callable[..., Path],
    tmp_path: Path,
    breaker: Callable[[Path, Path], None],
    exec_calls: int,
    message: str,
) -> None:
    store = make_store()
    version = scan_store(store).version
    claim = tmp_path / "claim"
    target = PvcTarget("model-claim", "models/scibert")
    script = upload_steps_text(kubectl_steps(scan_store(store), target, mount=str(claim)), target)
    root = claim / "models" / "scibert"
    breaker(store, claim)
    before = sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    done = run_with_fake_kubectl(script, tmp_path / "run")

    assert done.returncode != 0
    assert message.format(version=version) in done.stdout + done.stderr
    assert done.kubectl == ["apply", "wait"] + ["exec"] * exec_calls
    assert f"{version}.complete.json" not in [p.name for p in root.iterdir()]
    after = sorted(p.name for p in root.iterdir() if p.name != f".{version}.partial")
    assert after == before  # nothing published, nothing of what was there touched


def test_kubectl_steps_rerun_after_a_failed_check_complete(
    make_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = make_store()
    original = (store / "model-store" / "scibert.mar").read_bytes()
    claim = tmp_path / "claim"
    target = PvcTarget("model-claim", "models/scibert")
    script = upload_steps_text(kubectl_steps(scan_store(store), target, mount=str(claim)), target)
    _modify_a_file(store, claim)
    assert run_with_fake_kubectl(script, tmp_path / "first").returncode != 0

    (store / "model-store" / "scibert.mar").write_bytes(original)
    done = run_with_fake_kubectl(script, tmp_path / "second")

    assert done.returncode == 0, done.stderr
    version = scan_store(store).version
    assert tree(claim / "models" / "scibert" / version) == tree(store)
