"""`scibert-pack manifest`: KServe YAML on stdout (or -o FILE), warnings with fixes on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scibert_pack import api
from scibert_pack.cli._console import Console
from scibert_pack.config.properties import Ports
from scibert_pack.kserve.options import (
    ACCESS_MODES,
    AUTOSCALERS,
    DEFAULT_RUNTIME_NAME,
    METRICS,
    ONLY,
    PROTOCOLS,
    RUNTIMES,
    ManifestOptions,
)
from scibert_pack.storage.kubectl_steps import steps_script

DOCKERFILE_NAME = "Dockerfile.scibert-pack"


@click.command("manifest")
@click.option(
    "--name",
    help="InferenceService name (a DNS-1035 label; default: the --from-store model's name).",
)
@click.option(
    "--storage-uri",
    required=True,
    help="Where KServe fetches the model store: s3://bucket/prefix/ or pvc://claim/path.",
)
@click.option(
    "--from-store",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A built model store (OUT of `scibert-pack build`): model name, ports, versions.",
)
@click.option("--namespace", help="Namespace of every namespaced object.")
@click.option("--model-name", help="Model name in request URLs (default: the store's).")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default=ManifestOptions.protocol,
    show_default=True,
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=ManifestOptions.runtime,
    show_default=True,
    help="scibert-pack: our ServingRuntime (TorchServe directly, v2 explain works); "
    "kserve-torchserve: KServe's stock runtime and wrapper.",
)
@click.option("--runtime-name", default=DEFAULT_RUNTIME_NAME, show_default=True)
@click.option("--cluster-runtime", is_flag=True, help="Write a ClusterServingRuntime.")
@click.option(
    "--runtime-version", help="Stock runtime image tag (default: the TorchServe version)."
)
@click.option("--image", help="Image of our runtime (default: scibert-pack-torchserve:TS-cpu|gpu).")
@click.option("--timeout", type=int, help="Request timeout in seconds.")
@click.option("--batcher-max-batch-size", type=int, help="KServe batcher (v1 protocol only).")
@click.option("--batcher-max-latency", type=int, help="KServe batcher wait, in ms.")
@click.option(
    "--batcher-timeout", type=int, help="Written, but KServe does not pass it on (warns)."
)
@click.option("--min-replicas", type=int, help="0 scales to zero (Knative only).")
@click.option("--max-replicas", type=int)
@click.option("--container-concurrency", type=int, help="Hard limit of requests per pod.")
@click.option("--autoscaling-target", type=int, help="Soft limit the autoscaler aims at per pod.")
@click.option(
    "--autoscaler",
    type=click.Choice(AUTOSCALERS),
    default=ManifestOptions.autoscaler,
    show_default=True,
)
@click.option(
    "--autoscaling-metric",
    type=click.Choice(METRICS),
    help="kpa: concurrency (default) or rps; hpa: cpu (default) or memory.",
)
@click.option(
    "--cpu", default=ManifestOptions.cpu, show_default=True, help="CPU request and limit."
)
@click.option(
    "--memory", default=ManifestOptions.memory, show_default=True, help="Memory request and limit."
)
@click.option(
    "--gpu", type=int, default=ManifestOptions.gpu, show_default=True, help="nvidia.com/gpu count."
)
@click.option("--canary-traffic-percent", type=int)
@click.option("--service-account", help="Service account with the S3 credentials.")
@click.option("--prometheus/--no-prometheus", default=ManifestOptions.prometheus, show_default=True)
@click.option(
    "--metrics-port", type=int, help=f"Metrics port (default: the store's, {Ports.metrics})."
)
@click.option("--grafana", is_flag=True, help="Also write a Grafana dashboard ConfigMap.")
@click.option(
    "--only",
    type=click.Choice(ONLY),
    default=ManifestOptions.only,
    show_default=True,
    help="storage: the PVC and its copy pod; serving: runtime and InferenceService.",
)
@click.option("--pvc-size", default=ManifestOptions.pvc_size, show_default=True)
@click.option(
    "--pvc-access-mode", type=click.Choice(ACCESS_MODES), default=ManifestOptions.pvc_access_mode
)
@click.option("--storage-class")
@click.option(
    "--dockerfile",
    "dockerfile_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where to write our runtime's Dockerfile (default: {DOCKERFILE_NAME} beside -o, "
    "or in the current folder).",
)
@click.option("--no-dockerfile", is_flag=True, help="Do not write the Dockerfile.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the YAML to this file instead of stdout.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines (warnings still show).")
def manifest(
    from_store: Path | None,
    dockerfile_path: Path | None,
    no_dockerfile: bool,
    output: Path | None,
    quiet: bool,
    **values: Any,
) -> None:
    """Write KServe YAML for a model store, ready for `kubectl apply -f -`."""
    console = Console(quiet=quiet)
    if values["name"] is None and from_store is None:
        raise click.UsageError(
            "Missing option '--name' (or pass --from-store OUT to use its model name)"
        )
    if dockerfile_path is None:
        dockerfile_path = (output.parent if output else Path()) / DOCKERFILE_NAME
    result = api.write_manifest(
        values,
        store=from_store,
        output=output,
        dockerfile=dockerfile_path,
        write_dockerfile=not no_dockerfile,
    )
    for warning in result.warnings:
        console.warn(f"[{warning.code}] {warning.message}\n  fix: {warning.fix}")
    if output is None:
        click.echo(result.yaml, nl=False)
    if output is not None:
        console.progress(f"wrote {output}")
    if result.dockerfile is not None and not no_dockerfile:
        console.progress(
            f"wrote {dockerfile_path}: build and push {result.resolved.image} from it "
            "before applying"
        )
    if result.next_steps:
        console.progress("then fill the PVC with this script (run it as is):")
        console.progress(steps_script(result.next_steps).rstrip("\n"))
        if values["only"] == "all":
            console.progress(
                "tip: apply `--only storage` first and `--only serving` after the copy, so the "
                "InferenceService never starts on an empty claim"
            )
