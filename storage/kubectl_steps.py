"""The kubectl steps that copy a store into a PVC when the claim is not mounted here.

The same layout and guarantees as the filesystem backend (storage/filesystem.py), one step each:
exactly the store's listed files are sent (a tar stream of them, nothing else from OUT) into a
staging folder beside the version; every file's sha256, and their number, is checked there; the
staging folder is renamed to the version in one step (a reader sees no version or a whole one);
and the completion record the filesystem backend writes is written last. `scibert-pack upload`
prints these steps without --pvc-mount, and `scibert-pack manifest` fills a claim with them: one
recipe, no second, weaker one.

The commands run in the copy pod use only what busybox has (sh, tar, sha256sum, find, wc, mv).
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from scibert_pack.errors import InputError
from scibert_pack.storage.local_store import LocalStore
from scibert_pack.storage.sync import completion_record, empty_files_warning
from scibert_pack.storage.targets import PvcTarget

UPLOAD_POD = "scibert-pack-copy"
COPY_IMAGE = "busybox:1.36"
# Where the copy pod mounts the claim.
COPY_MOUNT = "/mnt/pvc"
_RECORD_SUFFIX = ".complete.json"
_EOF = "EOF"


@dataclass(frozen=True)
class Step:
    title: str
    # A shell command as the user runs it; a here-document makes it span several lines.
    command: str


@dataclass(frozen=True)
class PvcCopy:
    """The steps that put `store` into a claim, and what they leave there."""

    store: LocalStore
    # pvc://claim/path/VERSION: the storageUri once the steps have run.
    storage_uri: str
    record_uri: str
    steps: tuple[Step, ...]
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The machine-readable record: nothing is copied yet, so `complete` is false."""
        return {
            "storage_uri": self.storage_uri,
            "record_uri": self.record_uri,
            "version": self.store.version,
            "tree_sha256": self.store.tree_sha256,
            "complete": False,
            "steps": [{"title": s.title, "command": s.command} for s in self.steps],
            "objects": [
                {
                    "path": f.path,
                    "uri": f"{self.storage_uri.rstrip('/')}/{f.path}",
                    "size": f.size,
                    "sha256": f.sha256,
                }
                for f in self.store.files
            ],
            "warnings": list(self.warnings),
        }


def copy_pod_manifest(
    pod: str,
    claim: str,
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    mount: str = COPY_MOUNT,
) -> dict[str, Any]:
    """A pod that only holds the claim mounted, for the steps to exec into (busybox has tar)."""
    metadata: dict[str, Any] = {"name": pod}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "copy",
                    "image": COPY_IMAGE,
                    "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "store", "mountPath": mount}],
                }
            ],
            "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def pvc_copy(
    store: LocalStore,
    claim: str,
    folder: str,
    *,
    pod: str = UPLOAD_POD,
    kubectl: str = "kubectl",
    create_pod: bool = True,
    mount: str = COPY_MOUNT,
) -> PvcCopy:
    """The steps that put `store` at `folder` (a path inside claim `claim`, not its root) through
    pod `pod`. `kubectl` is the command prefix (e.g. `kubectl -n ml`); without `create_pod` the
    pod is expected to exist already (the manifest has it). `mount` is where the pod mounts the
    claim (tests point it at a local folder)."""
    folder = folder.strip("/")
    if not folder:
        raise InputError(
            f"pvc://{claim} is the root of the claim: a store copied there cannot be renamed "
            "into place in one step, so a pod could start on a half-copied store",
            fix=f"use a folder of the claim, e.g. pvc://{claim}/scibert",
        )
    q = shlex.quote
    parent = posixpath.join(mount, posixpath.dirname(folder))
    name = posixpath.basename(folder)
    staging = f".{name}.partial"
    record = f"{name}{_RECORD_SUFFIX}"
    record_tmp = f".{record}.tmp"
    # A trailing slash, as on S3: the storageUri names a folder (README).
    storage_uri = f"pvc://{claim}/{folder}/"
    record_bytes = completion_record(store, storage_uri)
    sums = "".join(f"{f.sha256}  {f.path}\n" for f in store.files)
    count = len(store.files)
    in_parent = f"cd {q(parent)}"
    in_staging = f"cd {q(posixpath.join(parent, staging))}"
    exec_i = f"{kubectl} exec -i {pod} -- sh -c"
    exec_ = f"{kubectl} exec {pod} -- sh -c"

    prepare = "; ".join(
        [
            "set -e",
            f"mkdir -p {q(parent)}",
            in_parent,
            _refuse_if(
                f"-e {q(name)}",
                f"{folder} exists already: it is complete if {record} is there, "
                "else delete it and rerun",
            ),
            _refuse_if(
                "-e config/config.properties",
                f"{posixpath.dirname(folder) or 'the claim root'} holds an unversioned model "
                "store: a version beneath it would be served along with it",
            ),
            f"rm -rf {q(staging)}",
            f"mkdir {q(staging)}",
        ]
    )
    files = " ".join(q(f.path) for f in store.files)
    unpack = f"{in_staging} && tar -xf - && chmod -R a+rX ."
    check = (
        f"{in_staging} && sha256sum -c - && n=$(find . -type f | wc -l) && "
        f'{{ [ $n -eq {count} ] || {{ echo "expected {count} files, found $n" >&2; exit 1; }}; }}'
    )
    publish = f"{in_parent} && [ ! -e {q(name)} ] && mv {q(staging)} {q(name)}"
    write_record = (
        f"{in_parent} && cat > {q(record_tmp)} && "
        f'printf "%s  %s\\n" {hashlib.sha256(record_bytes).hexdigest()} {q(record_tmp)} | '
        "sha256sum -c - && "
        f"mv {q(record_tmp)} {q(record)}"
    )
    steps: list[Step] = []
    if create_pod:
        manifest = yaml.safe_dump(
            copy_pod_manifest(pod, claim, mount=mount), sort_keys=False, default_flow_style=False
        )
        steps.append(
            Step(
                f"Start a pod that mounts claim {claim} at {mount}",
                _heredoc(f"{kubectl} apply -f -", manifest),
            )
        )
    steps += [
        Step(
            "Wait until the copy pod runs",
            f"{kubectl} wait --for=condition=Ready pod/{pod} --timeout=300s",
        ),
        Step(
            f"Make an empty staging folder {staging} beside the version (refused when the "
            "version is there already, or when its folder holds an unversioned store)",
            f"{exec_} {q(prepare)}",
        ),
        Step(
            f"Send exactly the store's {count} files (a tar stream of the listed files, "
            "nothing else from the store folder) into the staging folder",
            f"tar -chf - -C {q(str(store.root))} -- {files} | {exec_i} {q(unpack)}",
        ),
        Step(
            "Check every file's sha256 there, and that no other file is there",
            _heredoc(f"{exec_i} {q(check)}", sums),
        ),
        Step(
            "Rename the staging folder to the version in one step: a reader of the claim sees "
            "no version or a whole one",
            f"{exec_} {q(publish)}",
        ),
        Step(
            f"Write the completion record {record} last (the one an upload with --pvc-mount "
            "writes), checked by its sha256",
            _heredoc(f"{exec_i} {q(write_record)}", record_bytes.decode("utf-8")),
        ),
        Step("Remove the copy pod", f"{kubectl} delete pod {pod}"),
    ]
    warning = empty_files_warning(store, storage_uri)
    return PvcCopy(
        store=store,
        storage_uri=storage_uri,
        record_uri=f"pvc://{claim}/{folder}{_RECORD_SUFFIX}",
        steps=tuple(steps),
        warnings=(warning,) if warning else (),
    )


def kubectl_steps(store: LocalStore, target: PvcTarget, *, mount: str = COPY_MOUNT) -> PvcCopy:
    """What `scibert-pack upload OUT pvc://claim/path` does without --pvc-mount: the steps that
    put the store at pvc://claim/path/VERSION, as an upload with the claim mounted would."""
    folder = posixpath.join(target.path, store.version) if target.path else store.version
    return pvc_copy(store, target.claim, folder, mount=mount)


def steps_script(steps: tuple[Step, ...]) -> str:
    """The steps as a shell script: each one a numbered comment, then its command."""
    return "\n".join(f"# {n}. {s.title}\n{s.command}\n" for n, s in enumerate(steps, 1))


def upload_steps_text(copy: PvcCopy, target: PvcTarget) -> str:
    """What `scibert-pack upload` prints without --pvc-mount: a script to read and run as is."""
    return f"""\
# No --pvc-mount given: nothing was copied. To put {copy.store.root} on {target.uri},
# run these steps in the namespace of the InferenceService (add -n NAMESPACE to each kubectl),
# or mount the claim on this machine and rerun with --pvc-mount DIR.
# They keep an upload's guarantees: only the store's files are sent, each one's sha256 is
# checked on the claim, the version appears in one rename, its completion record comes last.

{steps_script(copy.steps)}
# storageUri for the InferenceService:
# {copy.storage_uri}
"""


def _refuse_if(condition: str, message: str) -> str:
    return f"if [ {condition} ]; then echo {_dq(message)} >&2; exit 1; fi"


def _dq(text: str) -> str:
    """`text` in double quotes for sh: readable inside the single-quoted `sh -c` script."""
    for char in ("\\", "$", "`", '"'):
        text = text.replace(char, "\\" + char)
    return f'"{text}"'


def _heredoc(command: str, body: str) -> str:
    """`command` reading `body` (which ends in a newline) from a quoted here-document: no
    expansion, the bytes arrive as they are."""
    # The document ends at the first line that is exactly the delimiter; ours never hold one.
    assert body.endswith("\n") and _EOF not in body.splitlines(), body
    return f"{command} <<'{_EOF}'\n{body}{_EOF}"
