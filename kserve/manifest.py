"""`scibert-pack manifest`: everything KServe needs for one model store, checked and warned."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from scibert_pack import __version__
from scibert_pack.kserve import documents as docs
from scibert_pack.kserve.dockerfile import dockerfile
from scibert_pack.kserve.grafana import dashboard_config_map
from scibert_pack.kserve.invariants import check_document
from scibert_pack.kserve.options import ManifestOptions
from scibert_pack.kserve.resolved import Resolved, resolve
from scibert_pack.kserve.store_info import StoreInfo
from scibert_pack.kserve.traps import ManifestWarning, check_traps
from scibert_pack.kserve.yaml_text import dump_documents


@dataclass(frozen=True)
class Manifest:
    documents: tuple[dict[str, Any], ...]
    yaml: str
    warnings: tuple[ManifestWarning, ...]
    # Text of our runtime's Dockerfile; None for the stock runtime or without serving documents.
    dockerfile: str | None
    # Shell commands to run after applying (filling a PVC); empty when there is nothing to do.
    next_steps: tuple[str, ...]
    resolved: Resolved


def build_manifest(
    options: ManifestOptions,
    store: StoreInfo | None = None,
    *,
    dockerfile_name: str = "Dockerfile",
) -> Manifest:
    r = resolve(options, store)
    documents: list[dict[str, Any]] = []
    steps: tuple[str, ...] = ()
    if options.pvc is not None and options.only in ("all", "storage"):
        documents += [docs.persistent_volume_claim(r), docs.copy_pod(r)]
        steps = fill_pvc_commands(r)
    if options.only in ("all", "serving"):
        if not r.stock:
            documents.append(docs.serving_runtime(r))
        documents.append(docs.inference_service(r))
        if options.grafana:
            documents.append(dashboard_config_map(r))
    for document in documents:
        check_document(document)
    warnings = tuple(check_traps(r)) if options.only != "storage" else ()
    serving = options.only != "storage" and not r.stock
    header = f"# Written by scibert-pack {__version__}: kubectl apply -f <this file>\n"
    if steps:
        header += "# Then fill the PVC:\n" + "".join(f"#   {step}\n" for step in steps)
    return Manifest(
        documents=tuple(documents),
        yaml=dump_documents(documents, header=header),
        warnings=warnings,
        dockerfile=dockerfile(r, filename=dockerfile_name) if serving else None,
        next_steps=steps,
        resolved=r,
    )


def fill_pvc_commands(r: Resolved) -> tuple[str, ...]:
    """kubectl commands that copy the store into the claim through the copy pod."""
    pvc = r.options.pvc
    if pvc is None:
        return ()
    claim, path = pvc
    pod = docs.copy_pod_name(claim)
    target = str(PurePosixPath(docs.COPY_MOUNT, path)) if path else docs.COPY_MOUNT
    source = str(r.store.path) if r.store and r.store.path else "OUT"
    kubectl = "kubectl" + (f" -n {r.options.namespace}" if r.options.namespace else "")
    q = shlex.quote
    return (
        f"{kubectl} wait --for=condition=Ready pod/{pod} --timeout=300s",
        f"{kubectl} exec {pod} -- mkdir -p {q(target)}",
        # kubectl cp nests into a folder that already exists: the target must be empty.
        f"{kubectl} cp {q(source + '/config')} {q(f'{pod}:{target}/config')}",
        f"{kubectl} cp {q(source + '/model-store')} {q(f'{pod}:{target}/model-store')}",
        f"{kubectl} delete pod {pod}",
    )
