"""`scibert-pack manifest`: everything KServe needs for one model store, checked and warned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scibert_pack import __version__
from scibert_pack.files import atomic_write_text
from scibert_pack.kserve import documents as docs
from scibert_pack.kserve.deployment_values import DeploymentValues, resolve
from scibert_pack.kserve.dockerfile import dockerfile
from scibert_pack.kserve.grafana import dashboard_config_map
from scibert_pack.kserve.invariants import check_document
from scibert_pack.kserve.options import ManifestOptions
from scibert_pack.kserve.traps import ManifestWarning, check_traps
from scibert_pack.kserve.yaml_text import dump_documents
from scibert_pack.layout import StoreFacts
from scibert_pack.storage import local_store
from scibert_pack.storage.kubectl_steps import Step, pvc_copy, steps_script


@dataclass(frozen=True)
class Manifest:
    documents: tuple[dict[str, Any], ...]
    yaml: str
    warnings: tuple[ManifestWarning, ...]
    # Text of our runtime's Dockerfile; None for the stock runtime or without serving documents.
    dockerfile: str | None
    # The steps that fill the PVC after applying (storage.kubectl_steps, the recipe `scibert-pack
    # upload` prints too); empty when there is nothing to do or no store to copy.
    next_steps: tuple[Step, ...]
    resolved: DeploymentValues


def build_manifest(
    options: ManifestOptions,
    store: StoreFacts | None = None,
    *,
    dockerfile_name: str = "Dockerfile",
) -> Manifest:
    r = resolve(options, store)
    documents: list[dict[str, Any]] = []
    steps: tuple[Step, ...] = ()
    warnings: list[ManifestWarning] = []
    if options.pvc is not None and options.only in ("all", "storage"):
        documents += [docs.persistent_volume_claim(r), docs.copy_pod(r)]
        steps = fill_pvc_commands(r)
        if not steps:
            warnings.append(_no_fill_steps(r))
    if options.only in ("all", "serving"):
        if not r.stock:
            documents.append(docs.serving_runtime(r))
        documents.append(docs.inference_service(r))
        if options.grafana:
            documents.append(dashboard_config_map(r))
    for document in documents:
        check_document(document)
    if options.only != "storage":
        warnings = [*check_traps(r), *warnings]
    serving = options.only != "storage" and not r.stock
    header = f"# Written by scibert-pack {__version__}: kubectl apply -f <this file>\n"
    if steps:
        header += "# Then fill the PVC with this script (also printed on stderr):\n" + "".join(
            f"# {line}".rstrip() + "\n" for line in steps_script(steps).splitlines()
        )
    return Manifest(
        documents=tuple(documents),
        yaml=dump_documents(documents, header=header),
        warnings=tuple(warnings),
        dockerfile=dockerfile(r, filename=dockerfile_name) if serving else None,
        next_steps=steps,
        resolved=r,
    )


def write_manifest(manifest: Manifest, output: Path | None, dockerfile_path: Path | None) -> None:
    """Writes the YAML to `output` and our runtime's Dockerfile (when the manifest has one) to
    `dockerfile_path`, each atomically; None skips that file. `scibert-pack manifest` and the
    demo both write through here."""
    if output is not None:
        atomic_write_text(output, manifest.yaml)
    if manifest.dockerfile is not None and dockerfile_path is not None:
        atomic_write_text(dockerfile_path, manifest.dockerfile)


def fill_pvc_commands(r: DeploymentValues) -> tuple[Step, ...]:
    """The steps that copy the store into the claim through the copy pod: the same recipe
    `scibert-pack upload OUT pvc://...` prints without --pvc-mount (only the store's files,
    every sha256 checked on the claim, one rename into place, the completion record last).
    Empty without a store folder: the steps carry every file's sha256."""
    pvc = r.options.pvc
    if pvc is None or r.store is None:
        return ()
    claim, path = pvc
    kubectl = "kubectl" + (f" -n {r.options.namespace}" if r.options.namespace else "")
    copy = pvc_copy(
        local_store.scan_store(r.store.root),
        claim,
        path,
        pod=docs.copy_pod_name(claim),
        kubectl=kubectl,
        create_pod=False,
    )
    return copy.steps


def _no_fill_steps(r: DeploymentValues) -> ManifestWarning:
    return ManifestWarning(
        "pvc-fill-needs-store",
        f"no steps to fill the claim of {r.options.storage_uri}: they copy and check every "
        "file of the model store, which was not given",
        "pass --from-store OUT to get them (the same steps `scibert-pack upload OUT "
        "pvc://CLAIM/PATH` prints)",
    )
