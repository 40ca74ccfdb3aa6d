"""`scibert-pack manifest`: option checks, documents, store reading, YAML and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.manifest_store import COMBINATIONS, VERSIONS, write_store
from support.s3_stores_and_proxies import run_with_fake_kubectl, tree

from scibert_pack.cli import cli
from scibert_pack.errors import InputError, ManifestError, StoreError
from scibert_pack.kserve.invariants import check_document
from scibert_pack.kserve.manifest import build_manifest
from scibert_pack.kserve.options import ManifestOptions
from scibert_pack.kserve.store_info import read_store_for_manifest
from scibert_pack.storage import local_store as storage_store
from scibert_pack.storage.kubectl_steps import copy_pod_manifest, pvc_copy, steps_script
from scibert_pack.storage.sync import completion_record

BASE = {"name": "scibert", "storage_uri": "s3://models/scibert/v1/"}


def _kinds(documents: Any) -> list[str]:
    return [d["kind"] for d in documents]


def _by_kind(documents: Any, kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind]
    return found


# --- options: names, ranges and combinations -------------------------------------------------

BAD_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "name-uppercase",
        {"name": "SciBERT"},
        "InferenceService name 'SciBERT' is not valid; use at most 53 characters of a-z, 0-9 "
        "and '-', starting with a letter and ending with a letter or digit (KServe adds "
        "'-predictor' to it), e.g. 'scibert-abstracts'",
    ),
    (
        "name-starts-with-digit",
        {"name": "1scibert"},
        "InferenceService name '1scibert' is not valid",
    ),
    ("name-too-long", {"name": "a" * 54}, f"InferenceService name '{'a' * 54}' is not valid"),
    (
        "namespace",
        {"namespace": "ML_Serving"},
        "namespace 'ML_Serving' is not a valid Kubernetes name; use at most 63 characters of "
        "a-z, 0-9 and '-', starting and ending alphanumeric",
    ),
    (
        "model-name",
        {"model_name": "sci bert"},
        "model name 'sci bert' cannot be used in request URLs; use letters, digits, '_', '.' "
        "and '-', starting with a letter or digit",
    ),
    (
        "service-account",
        {"service_account": "S3_Reader"},
        "service account 'S3_Reader' is not a valid Kubernetes name",
    ),
    (
        "storage-scheme",
        {"storage_uri": "/data/scibert"},
        "--storage-uri '/data/scibert' is not a storage URI KServe can fetch; give the model "
        "store's location, e.g. s3://bucket/scibert/v1/ or pvc://claim/scibert/v1",
    ),
    (
        "storage-empty",
        {"storage_uri": "s3://"},
        "--storage-uri 's3://' names no valid S3 bucket (got '')",
    ),
    (
        "pvc-claim",
        {"storage_uri": "pvc://My_Claim/x"},
        "--storage-uri 'pvc://My_Claim/x' names no valid PersistentVolumeClaim (got 'My_Claim')",
    ),
    (
        "cpu",
        {"cpu": "two"},
        "--cpu 'two' is not a Kubernetes quantity; give a positive quantity such as '2' or '500m'",
    ),
    ("memory-negative", {"memory": "-4Gi"}, "--memory '-4Gi' is not a Kubernetes quantity"),
    (
        "timeout-zero",
        {"timeout": 0},
        "--timeout must be an integer from 1 to 86400, got 0; pass a value between 1 and 86400",
    ),
    ("canary-over-100", {"canary_traffic_percent": 101}, "--canary-traffic-percent must be"),
    ("gpu-negative", {"gpu": -1}, "--gpu must be an integer from 0 to 16, got -1"),
    ("max-replicas-zero", {"max_replicas": 0}, "--max-replicas must be an integer from 1"),
    ("batch-size-zero", {"batcher_max_batch_size": 0}, "--batcher-max-batch-size must be"),
    (
        "min-above-max",
        {"min_replicas": 5, "max_replicas": 2},
        "--min-replicas 5 is above --max-replicas 2; raise --max-replicas or lower --min-replicas",
    ),
    (
        "target-above-hard-limit",
        {"container_concurrency": 4, "autoscaling_target": 10},
        "--autoscaling-target 10 (soft limit) is above --container-concurrency 4 (hard "
        "limit): the target can never be reached; use an --autoscaling-target of at most 4, "
        "e.g. 2",
    ),
    (
        "kpa-with-cpu",
        {"autoscaling_metric": "cpu"},
        "--autoscaling-metric cpu does not work with --autoscaler kpa, which scales on "
        "concurrency or rps; use --autoscaler hpa for cpu/memory, --autoscaler kpa for "
        "concurrency/rps",
    ),
    (
        "hpa-with-rps",
        {"autoscaler": "hpa", "autoscaling_metric": "rps"},
        "--autoscaling-metric rps does not work with --autoscaler hpa",
    ),
    (
        "hpa-scale-to-zero",
        {"autoscaler": "hpa", "min_replicas": 0},
        "--min-replicas 0 needs Knative (--autoscaler kpa); --autoscaler hpa runs KServe in raw "
        "deployment mode, which cannot scale to zero, limit concurrency or split canary "
        "traffic; drop --min-replicas or use --autoscaler kpa",
    ),
    (
        "hpa-canary-and-concurrency",
        {"autoscaler": "hpa", "canary_traffic_percent": 10, "container_concurrency": 2},
        "--container-concurrency, --canary-traffic-percent needs Knative",
    ),
    (
        "hpa-target-percent",
        {"autoscaler": "hpa", "autoscaling_target": 150},
        "--autoscaling-target (percent of the request) must be an integer from 1 to 100",
    ),
    (
        "runtime-version-for-ours",
        {"runtime_version": "0.12.0"},
        "--runtime-version picks the image of the stock runtime, got '0.12.0' with --runtime "
        "scibert-pack; use --image for our runtime, or --runtime kserve-torchserve",
    ),
    (
        "image-for-stock",
        {"runtime": "kserve-torchserve", "image": "x:1"},
        "--image and --cluster-runtime describe our ServingRuntime, not the stock "
        "'kserve-torchserve'",
    ),
    (
        "image-with-a-newline",
        {"image": "a\nRUN curl http://127.0.0.1/x | sh"},
        "--image 'a\\nRUN curl http://127.0.0.1/x | sh' is not a container image reference; "
        "give REGISTRY/PATH:TAG in lowercase with no spaces, e.g. "
        "'registry.example.com/ml/scibert-pack-torchserve:0.12.0-cpu'",
    ),
    ("image-uppercase-path", {"image": "Registry.io/ML/Img:1"}, "--image 'Registry.io/ML/Img:1'"),
    ("image-yaml-special", {"image": "a: b"}, "--image 'a: b' is not a container image"),
    (
        "runtime-version-with-a-newline",
        {"runtime": "kserve-torchserve", "runtime_version": "0.12.0\nRUN id"},
        "--runtime-version '0.12.0\\nRUN id' is not an image tag; give at most 128 characters",
    ),
    ("protocol", {"protocol": "v3"}, "--protocol 'v3' is not one of v1, v2"),
    (
        "storage-credentials",
        {"storage_uri": "s3://AKIAEXAMPLE:top/secret@models/scibert/"},
        "--storage-uri 's3://***@models/scibert/' carries credentials (the part before '@'); "
        "a URI ends up in shell history, logs and manifests, so keys never go there; remove "
        "them and give the predictor the credentials through --service-account (a "
        "ServiceAccount with KServe's S3 secret annotations)",
    ),
    (
        "https-credentials",
        {"storage_uri": "https://user:topsecret@example.com/scibert.tar.gz"},
        "--storage-uri 'https://***@example.com/scibert.tar.gz' carries credentials",
    ),
    (
        "pvc-claim-root",
        {"storage_uri": "pvc://models"},
        "--storage-uri 'pvc://models' is the root of claim 'models': a store copied there "
        "cannot be renamed into place in one step, so the InferenceService could start on a "
        "half-copied store; serve a folder of the claim, e.g. --storage-uri "
        "pvc://models/scibert (`scibert-pack upload OUT pvc://CLAIM/PATH` prints one), or "
        "pass --only serving for a claim that is filled already",
    ),
    (
        "storage-only-without-pvc",
        {"only": "storage"},
        "--only storage writes the PVC documents, but --storage-uri 's3://models/scibert/v1/' "
        "is not a pvc:// URI; use --storage-uri pvc://CLAIM/PATH, or drop --only storage",
    ),
]


@pytest.mark.parametrize(
    ("extra", "message"), [b[1:] for b in BAD_OPTIONS], ids=[b[0] for b in BAD_OPTIONS]
)
def test_bad_options_are_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as caught:
        ManifestOptions(**{**BASE, **extra})
    assert str(caught.value).startswith(message)
    assert "topsecret" not in str(caught.value) and "AKIAEXAMPLE" not in str(caught.value)


# --- documents ---------------------------------------------------------------------------------


def test_our_runtime_runs_torchserve_directly() -> None:
    result = build_manifest(ManifestOptions(**BASE, namespace="ml"))
    assert _kinds(result.documents) == ["ServingRuntime", "InferenceService"]
    runtime = _by_kind(result.documents, "ServingRuntime")
    assert runtime["metadata"]["namespace"] == "ml"
    assert runtime["spec"]["supportedModelFormats"] == [
        {"name": "scibert-pack", "version": "1", "autoSelect": False}
    ]
    (container,) = runtime["spec"]["containers"]
    assert [container["command"][0], *container["args"]] == [
        "torchserve",
        "--start",
        "--foreground",
        "--model-store=/mnt/models/model-store",
        "--ts-config=/mnt/models/config/config.properties",
        "--disable-token-auth",
        "--no-config-snapshots",
    ]
    assert container["env"] == [{"name": "TS_OPEN_INFERENCE_PROTOCOL", "value": "oip"}]
    assert container["ports"] == [{"name": "http1", "containerPort": 8085, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/ping", "port": 8085}
    # /ping is Healthy before the workers load: readiness asks for a READY worker.
    ready = container["readinessProbe"]["exec"]["command"]
    assert ready[:2] == ["python", "-c"] and "127.0.0.1:8081/models/" in ready[2]
    model = _by_kind(result.documents, "InferenceService")["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "scibert-pack"}
    assert model["runtime"] == "scibert-pack-torchserve"
    assert "runtimeVersion" not in model


def test_torchserve_accepts_our_runtime_args() -> None:
    """The flags are the ones TorchServe 0.12's own argument parser knows."""
    from ts.arg_parser import ArgParser

    runtime = build_manifest(ManifestOptions(**BASE)).documents[0]
    args = ArgParser.ts_parser().parse_args(runtime["spec"]["containers"][0]["args"])
    assert (args.start, args.foreground, args.token_auth, args.no_config_snapshots) == (
        True,
        True,
        True,
        True,
    )
    assert args.model_store == "/mnt/models/model-store"


def test_cluster_runtime_has_no_namespace() -> None:
    result = build_manifest(ManifestOptions(**BASE, namespace="ml", cluster_runtime=True))
    runtime = result.documents[0]
    assert (runtime["kind"], "namespace" in runtime["metadata"]) == ("ClusterServingRuntime", False)
    assert _by_kind(result.documents, "InferenceService")["metadata"]["namespace"] == "ml"


@pytest.mark.parametrize(
    ("extra", "version"),
    [({}, "0.12.0"), ({"gpu": 1}, "0.12.0-gpu"), ({"runtime_version": "0.12.0-cpu"}, "0.12.0-cpu")],
    ids=["cpu", "gpu", "explicit"],
)
def test_stock_runtime_pins_runtime_version(extra: dict[str, Any], version: str) -> None:
    result = build_manifest(ManifestOptions(**BASE, runtime="kserve-torchserve", **extra))
    assert _kinds(result.documents) == ["InferenceService"]
    model = result.documents[0]["spec"]["predictor"]["model"]
    assert (model["modelFormat"], model["runtime"], model["runtimeVersion"]) == (
        {"name": "pytorch"},
        "kserve-torchserve",
        version,
    )
    assert result.dockerfile is None


def test_scaling_and_limits_land_where_kserve_reads_them() -> None:
    options = ManifestOptions(
        **BASE,
        min_replicas=0,
        max_replicas=4,
        container_concurrency=8,
        autoscaling_target=6,
        canary_traffic_percent=20,
        timeout=90,
        service_account="s3-reader",
        gpu=1,
        cpu="3",
        memory="6Gi",
    )
    isvc = _by_kind(build_manifest(options).documents, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert {k: v for k, v in predictor.items() if k != "model"} == {
        "minReplicas": 0,
        "maxReplicas": 4,
        "containerConcurrency": 8,
        "timeout": 90,
        "canaryTrafficPercent": 20,
        "serviceAccountName": "s3-reader",
    }
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "3", "memory": "6Gi"},
        "limits": {"cpu": "3", "memory": "6Gi", "nvidia.com/gpu": "1"},
    }
    notes = isvc["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/metric"] == "concurrency"
    assert notes["autoscaling.knative.dev/target"] == "6"


def test_hpa_uses_raw_deployment() -> None:
    options = ManifestOptions(**BASE, autoscaler="hpa", autoscaling_target=70, max_replicas=5)
    isvc = _by_kind(build_manifest(options).documents, "InferenceService")
    notes = isvc["metadata"]["annotations"]
    assert notes["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert notes["serving.kserve.io/autoscalerClass"] == "hpa"
    assert not any(key.startswith("autoscaling.knative.dev") for key in notes)
    predictor = isvc["spec"]["predictor"]
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 70)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, None),
        ({"protocol": "v1", "batcher_max_batch_size": 32}, {"maxBatchSize": 32}),
        (
            {"protocol": "v1", "batcher_max_latency": 50, "batcher_timeout": 5},
            {"maxLatency": 50, "timeout": 5},
        ),
    ],
    ids=["none", "size", "latency-timeout"],
)
def test_batcher(extra: dict[str, Any], expected: dict[str, int] | None) -> None:
    isvc = _by_kind(build_manifest(ManifestOptions(**BASE, **extra)).documents, "InferenceService")
    assert isvc["spec"]["predictor"].get("batcher") == expected


def test_prometheus_annotations_are_strings_on_the_metrics_port(tmp_path: Path) -> None:
    store = read_store_for_manifest(write_store(tmp_path / "out", metrics_port=9182))
    result = build_manifest(ManifestOptions(**BASE), store)
    notes = yaml.safe_load_all(result.yaml)
    isvc = _by_kind(list(notes), "InferenceService")
    assert {k: v for k, v in isvc["metadata"]["annotations"].items() if "prometheus" in k} == {
        "serving.kserve.io/enable-prometheus-scraping": "true",
        "prometheus.kserve.io/port": "9182",
        "prometheus.kserve.io/path": "/metrics",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9182",
        "prometheus.io/path": "/metrics",
    }
    runtime = result.documents[0]
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == "9182"


def test_no_prometheus_means_no_scrape_annotations() -> None:
    result = build_manifest(ManifestOptions(**BASE, prometheus=False))
    assert "annotations" not in _by_kind(result.documents, "InferenceService")["metadata"]
    assert "annotations" not in result.documents[0]["spec"]


# --- PVC storage -------------------------------------------------------------------------------


def test_pvc_storage_adds_claim_copy_pod_and_the_upload_copy_steps(tmp_path: Path) -> None:
    out = write_store(tmp_path / "out")
    options = ManifestOptions(
        name="scibert",
        storage_uri="pvc://models/scibert/v1",
        namespace="ml",
        pvc_size="3Gi",
        storage_class="fast",
    )
    result = build_manifest(options, read_store_for_manifest(out))
    assert _kinds(result.documents) == [
        "PersistentVolumeClaim",
        "Pod",
        "ServingRuntime",
        "InferenceService",
    ]
    pvc, pod = result.documents[:2]
    assert pvc["metadata"] == {
        "name": "models",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/managed-by": "scibert-pack"},
    }
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "3Gi"}},
        "storageClassName": "fast",
    }
    # The pod the upload's steps start, in the namespace, labelled.
    assert pod == copy_pod_manifest(
        "models-copy",
        "models",
        namespace="ml",
        labels={"app.kubernetes.io/managed-by": "scibert-pack"},
    )
    # The very steps `scibert-pack upload` prints (its pod is in the YAML, so none to start).
    store = storage_store.scan_store(out)
    assert (
        result.next_steps
        == pvc_copy(
            store,
            "models",
            "scibert/v1",
            pod="models-copy",
            kubectl="kubectl -n ml",
            create_pod=False,
        ).steps
    )
    commands = [step.command for step in result.next_steps]
    assert commands[0] == "kubectl -n ml wait --for=condition=Ready pod/models-copy --timeout=300s"
    assert commands[2] == (
        f"tar -chf - -C {out} -- build-report.json config/config.properties "
        "model-store/scibert.mar | kubectl -n ml exec -i models-copy -- sh -c "
        "'cd /mnt/pvc/scibert/.v1.partial && tar -xf - && chmod -R a+rX .'"
    )
    assert commands[-1] == "kubectl -n ml delete pod models-copy"
    assert [c.split(" -- ")[0] for c in commands[1:-1]] == [
        "kubectl -n ml exec models-copy",
        f"tar -chf - -C {out}",
        "kubectl -n ml exec -i models-copy",
        "kubectl -n ml exec models-copy",
        "kubectl -n ml exec -i models-copy",
    ]
    # The script also travels with the YAML, as comments.
    header = "".join(
        f"# {line}".rstrip() + "\n" for line in steps_script(result.next_steps).splitlines()
    )
    assert f"# Then fill the PVC with this script (also printed on stderr):\n{header}" in (
        result.yaml
    )


def test_manifest_fill_steps_fill_the_claim(tmp_path: Path) -> None:
    """The manifest's flavour of the recipe (namespace, the YAML's pod, a folder that is not a
    version name), run with kubectl exec standing for a shell here."""
    out = write_store(tmp_path / "out")
    store = storage_store.scan_store(out)
    claim = tmp_path / "claim"
    copy = pvc_copy(
        store,
        "models",
        "scibert/v1",
        pod="models-copy",
        kubectl="kubectl -n ml",
        create_pod=False,
        mount=str(claim),
    )

    done = run_with_fake_kubectl(steps_script(copy.steps), tmp_path / "run")

    assert done.returncode == 0, done.stderr
    assert done.kubectl == ["wait", "exec", "exec", "exec", "exec", "exec", "delete"]
    assert sorted(p.name for p in (claim / "scibert").iterdir()) == ["v1", "v1.complete.json"]
    assert tree(claim / "scibert" / "v1") == tree(out)
    assert (claim / "scibert" / "v1.complete.json").read_bytes() == completion_record(
        store, "pvc://models/scibert/v1/"
    )


def test_pvc_storage_without_a_store_has_no_steps_and_says_why() -> None:
    options = ManifestOptions(name="scibert", storage_uri="pvc://models/scibert", only="storage")
    result = build_manifest(options)
    assert result.next_steps == ()
    assert [str(w) for w in result.warnings] == [
        "[pvc-fill-needs-store] no steps to fill the claim of pvc://models/scibert: they copy "
        "and check every file of the model store, which was not given; pass --from-store OUT "
        "to get them (the same steps `scibert-pack upload OUT pvc://CLAIM/PATH` prints)"
    ]


@pytest.mark.parametrize(
    ("only", "kinds"),
    [
        ("storage", ["PersistentVolumeClaim", "Pod"]),
        ("serving", ["ServingRuntime", "InferenceService"]),
    ],
    ids=["storage", "serving"],
)
def test_only_splits_storage_from_serving(only: str, kinds: list[str]) -> None:
    options = ManifestOptions(name="scibert", storage_uri="pvc://models/scibert", only=only)  # type: ignore[arg-type]
    assert _kinds(build_manifest(options).documents) == kinds


# --- Grafana -----------------------------------------------------------------------------------


def test_grafana_dashboard_config_map() -> None:
    result = build_manifest(ManifestOptions(**BASE, grafana=True, model_name="scibert"))
    config_map = _by_kind(result.documents, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    board = json.loads(text)
    titles = [p["title"] for p in board["panels"]]
    assert titles == [
        "Request rate",
        "Latency per request (mean)",
        "Batch size (texts per batch)",
        "Forward pass per batch",
        "Explanation time",
        "Worker memory",
    ]
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in (
        "ts_inference_requests_total",
        "ts_inference_latency_microseconds",
        "ts_queue_latency_microseconds",
        "scibert_texts_per_batch",
        "scibert_inference_ms",
        "scibert_explain_ms",
        "scibert_explain_steps",
        "MemoryUsed",
    ):
        assert metric in exprs
    assert board["templating"]["list"][1]["query"] == "scibert"


# --- Dockerfile --------------------------------------------------------------------------------


DOCKERFILES: list[tuple[str, int, str, list[str]]] = [
    (
        "3.9",
        0,
        "3.9.18",
        [
            "FROM pytorch/torchserve:0.12.0-cpu",
            "    transformers==4.46.3 \\",
            "    captum==0.8.0 \\",
        ],
    ),
    ("3.9", 1, "3.9.18", ["FROM pytorch/torchserve:0.12.0-gpu"]),
    (
        "3.11",
        0,
        "3.11.9",
        [
            "FROM python:3.11-slim-bookworm",
            " && apt-get install -y --no-install-recommends openjdk-17-jre-headless \\",
            "RUN useradd --create-home --uid 1000 model-server",
            "RUN python -m pip install --no-cache-dir --index-url "
            "https://download.pytorch.org/whl/cpu torch==2.13.0",
            "    torchserve==0.12.0 \\",
            "    transformers==4.46.3 \\",
            "    captum==0.8.0 \\",
            "USER model-server",
        ],
    ),
    (
        "3.12",
        1,
        "3.12.1",
        [
            "FROM python:3.12-slim-bookworm",
            "RUN python -m pip install --no-cache-dir torch==2.13.0",
        ],
    ),
]


@pytest.mark.parametrize(
    ("gpu", "python", "expected"),
    [d[1:] for d in DOCKERFILES],
    ids=[f"py{d[0]}-{'gpu' if d[1] else 'cpu'}" for d in DOCKERFILES],
)
def test_dockerfile_pins_the_archive_versions(
    tmp_path: Path, gpu: int, python: str, expected: list[str]
) -> None:
    store = read_store_for_manifest(
        write_store(tmp_path / "out", versions={"python": python, "torch": "2.13.0+cpu"})
    )
    result = build_manifest(ManifestOptions(**BASE, gpu=gpu), store)
    assert result.dockerfile is not None
    lines = result.dockerfile.splitlines()
    assert [line for line in expected if line not in lines] == []
    image = _by_kind(result.documents, "ServingRuntime")["spec"]["containers"][0]["image"]
    assert image == f"scibert-pack-torchserve:0.12.0-{'gpu' if gpu else 'cpu'}"


@pytest.mark.parametrize("dist", ["torch", "torchserve", "transformers", "captum", "python"])
def test_an_edited_report_cannot_put_lines_into_the_dockerfile(tmp_path: Path, dist: str) -> None:
    out = write_store(tmp_path / "out", versions={dist: "2.13.0\nRUN id"})
    with pytest.raises(StoreError) as caught:
        read_store_for_manifest(out)
    assert str(caught.value) == (
        f"model store {out}: build-report.json gives {dist} version '2.13.0\\nRUN id', which "
        "is not a package version (a Dockerfile would carry it as it is); rebuild the store "
        "with `scibert-pack build` instead of editing its report"
    )


@pytest.mark.parametrize(
    "image",
    [
        "scibert-pack-torchserve:0.12.0-cpu",
        "registry.example.com:5000/ml/scibert_pack-torchserve:v1.2",
        "ghcr.io/org/img@sha256:" + "a" * 64,
        "localhost/img",
    ],
)
def test_image_references_are_taken_as_given(image: str) -> None:
    result = build_manifest(ManifestOptions(**BASE, image=image))
    assert _by_kind(result.documents, "ServingRuntime")["spec"]["containers"][0]["image"] == image


def test_dockerfile_without_store_uses_installed_versions() -> None:
    from importlib.metadata import version

    dockerfile = build_manifest(ManifestOptions(**BASE)).dockerfile
    assert dockerfile is not None
    assert f"transformers=={version('transformers')} " in dockerfile
    assert f"captum=={version('captum')} " in dockerfile


# --- model store -------------------------------------------------------------------------------


def test_store_fills_model_name_ports_and_auth(tmp_path: Path) -> None:
    info = read_store_for_manifest(
        write_store(tmp_path / "out", model_name="abstracts", token_auth=True)
    )
    assert (info.model_name, info.served_models, info.inference_port, info.metrics_port) == (
        "abstracts",
        ("abstracts",),
        8085,
        8082,
    )
    assert (info.token_auth, info.metrics_mode, info.bind_hosts) == (
        True,
        "prometheus",
        ("0.0.0.0", "0.0.0.0"),
    )


@pytest.fixture
def store_without_report(tmp_path: Path) -> Path:
    out = write_store(tmp_path / "out")
    (out / "build-report.json").unlink()
    return out


@pytest.fixture
def store_without_config(tmp_path: Path) -> Path:
    out = write_store(tmp_path / "out")
    (out / "config" / "config.properties").unlink()
    return out


@pytest.fixture
def store_with_other_schema(tmp_path: Path) -> Path:
    out = write_store(tmp_path / "out")
    (out / "build-report.json").write_text('{"schema": "other/v9"}', encoding="utf-8")
    return out


@pytest.fixture
def store_with_bad_snapshot(tmp_path: Path) -> Path:
    out = write_store(tmp_path / "out")
    (out / "config" / "config.properties").write_text("model_snapshot={oops\n", encoding="utf-8")
    return out


@pytest.fixture
def store_serving_a_missing_archive(tmp_path: Path) -> Path:
    """The blog's config.properties copied over the built one: it serves another archive."""
    out = write_store(tmp_path / "out")
    config = out / "config" / "config.properties"
    text = config.read_text(encoding="utf-8")
    assert "scibert.mar" in text
    config.write_text(text.replace("scibert.mar", "SciBERTSeqClassification.mar"), encoding="utf-8")
    return out


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        (
            "store_serving_a_missing_archive",
            "model store {out} has no model-store/SciBERTSeqClassification.mar, which "
            "config.properties serves; point --from-store at the OUT folder of `scibert-pack "
            "build`, or rebuild it",
        ),
        (
            "store_without_report",
            "model store {out} has no build-report.json; point --from-store at the OUT folder "
            "of `scibert-pack build`, or rebuild it",
        ),
        ("store_without_config", "model store {out} has no config/config.properties"),
        (
            "store_with_other_schema",
            "{out}/build-report.json has schema 'other/v9', expected "
            "'scibert-pack/build-report/v1'",
        ),
        ("store_with_bad_snapshot", "model_snapshot in {out}/config/config.properties is not"),
    ],
    ids=["missing-archive", "no-report", "no-config", "other-schema", "bad-snapshot"],
)
def test_broken_store_is_refused(
    request: pytest.FixtureRequest, fixture: str, message: str
) -> None:
    out: Path = request.getfixturevalue(fixture)
    with pytest.raises(StoreError) as caught:
        read_store_for_manifest(out)
    assert str(caught.value).startswith(message.format(out=out))


# --- the command's own invariants --------------------------------------------------------------


def _isvc_doc() -> dict[str, Any]:
    return _by_kind(build_manifest(ManifestOptions(**BASE)).documents, "InferenceService")


def _typo(doc: dict[str, Any]) -> None:
    doc["spec"]["predictor"]["minReplica"] = 1


def _int_annotation(doc: dict[str, Any]) -> None:
    doc["metadata"]["annotations"]["prometheus.io/port"] = 8082


def _null(doc: dict[str, Any]) -> None:
    doc["spec"]["predictor"]["timeout"] = None


def _range(doc: dict[str, Any]) -> None:
    doc["spec"]["predictor"]["canaryTrafficPercent"] = 120


def _envelope(doc: dict[str, Any]) -> None:
    doc["spec"]["containers"][0]["env"].append({"name": "TS_SERVICE_ENVELOPE", "value": "kservev2"})


@pytest.mark.parametrize(
    ("kind", "breaks", "message"),
    [
        ("InferenceService", _typo, "spec.predictor has unknown keys ['minReplica']"),
        (
            "InferenceService",
            _int_annotation,
            "InferenceService.metadata.annotations[prometheus.io/port] = 8082 must be a string",
        ),
        ("InferenceService", _null, "InferenceService.spec.predictor.timeout is null"),
        (
            "InferenceService",
            _range,
            "spec.predictor.canaryTrafficPercent = 120 must be an integer from 0 to 100",
        ),
        (
            "ServingRuntime",
            _envelope,
            "our runtime must not set TS_SERVICE_ENVELOPE: the handler speaks v1/v2 itself",
        ),
    ],
    ids=["typo", "int-annotation", "null", "range", "envelope"],
)
def test_invariants_catch_broken_documents(kind: str, breaks: Any, message: str) -> None:
    doc = _by_kind(build_manifest(ManifestOptions(**BASE)).documents, kind)
    check_document(doc)
    breaks(doc)
    with pytest.raises(ManifestError) as caught:
        check_document(doc)
    assert str(caught.value) == (
        f"generated manifest breaks its own rules: {message}; this is a scibert-pack bug; "
        "please report it with the command line used"
    )


# --- YAML --------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_store", [False, True], ids=["no-store", "store"])
@pytest.mark.parametrize("extra", [c[1] for c in COMBINATIONS], ids=[c[0] for c in COMBINATIONS])
def test_yaml_round_trips_to_the_same_objects(
    tmp_path: Path, extra: dict[str, Any], with_store: bool
) -> None:
    store = read_store_for_manifest(write_store(tmp_path / "out")) if with_store else None
    result = build_manifest(ManifestOptions(**{**BASE, **extra}), store)
    assert list(yaml.safe_load_all(result.yaml)) == list(result.documents)
    assert "&id" not in result.yaml  # no anchors: every document reads on its own
    assert result.yaml.splitlines().count("---") == len(result.documents)


# --- CLI ---------------------------------------------------------------------------------------


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, ["manifest", *args], catch_exceptions=False)


def test_cli_prints_yaml_on_stdout_and_warnings_on_stderr(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    result = _run(
        [
            "--name",
            "scibert",
            "--storage-uri",
            "s3://models/scibert/v1",
            "--dockerfile",
            str(dockerfile),
        ]
    )
    assert result.exit_code == 0, result.stderr
    assert _kinds(yaml.safe_load_all(result.stdout)) == ["ServingRuntime", "InferenceService"]
    assert result.stderr == (
        "Warning: [storage-uri-slash] storageUri 's3://models/scibert/v1' has no trailing "
        "slash: KServe downloads every object under the prefix, so s3://models/scibert/v10/... "
        "or s3://models/scibert/v1-old/... would be mixed in (kserve#3776)\n"
        "  fix: use --storage-uri s3://models/scibert/v1/\n"
        f"wrote {dockerfile}: build and push scibert-pack-torchserve:0.12.0-cpu from it before "
        "applying\n"
    )
    assert dockerfile.read_text(encoding="utf-8").startswith(
        "# Image of the scibert-pack-torchserve ServingRuntime"
    )


def test_cli_reads_the_store_and_writes_files(tmp_path: Path) -> None:
    out = write_store(tmp_path / "out", model_name="scibert")
    target = tmp_path / "deploy" / "scibert.yaml"
    result = _run(
        [
            "--name",
            "scibert",
            "--storage-uri",
            "s3://models/scibert/v1/",
            "--from-store",
            str(out),
            "--grafana",
            "-o",
            str(target),
            "--quiet",
        ]
    )
    assert result.exit_code == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    documents = list(yaml.safe_load_all(target.read_text(encoding="utf-8")))
    assert _kinds(documents) == ["ServingRuntime", "InferenceService", "ConfigMap"]
    dockerfile = (tmp_path / "deploy" / "Dockerfile.scibert-pack").read_text(encoding="utf-8")
    assert f"transformers=={VERSIONS['transformers']}" in dockerfile


def test_cli_stock_runtime_writes_no_dockerfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--name", "scibert", "--storage-uri", "s3://m/s/", "--runtime", "kserve-torchserve"]
    result = _run([*args, "--protocol", "v1"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("Warning: [stock-runtime-libraries] ")
    assert list(tmp_path.iterdir()) == []


def test_cli_pvc_prints_the_copy_script(tmp_path: Path) -> None:
    out = write_store(tmp_path / "out")
    args = ["--name", "scibert", "--storage-uri", "pvc://models/scibert", "--no-dockerfile"]
    result = _run([*args, "--only", "storage", "--from-store", str(out)])
    assert result.exit_code == 0, result.stderr
    assert _kinds(yaml.safe_load_all(result.stdout)) == ["PersistentVolumeClaim", "Pod"]
    steps = pvc_copy(
        storage_store.scan_store(out), "models", "scibert", pod="models-copy", create_pod=False
    ).steps
    assert result.stderr == (
        f"then fill the PVC with this script (run it as is):\n{steps_script(steps)}"
    )


def test_cli_pvc_without_store_warns_that_it_has_no_steps() -> None:
    args = ["--name", "scibert", "--storage-uri", "pvc://models/scibert", "--no-dockerfile"]
    result = _run([*args, "--only", "storage"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (
        "Warning: [pvc-fill-needs-store] no steps to fill the claim of pvc://models/scibert: "
        "they copy and check every file of the model store, which was not given\n"
        "  fix: pass --from-store OUT to get them (the same steps `scibert-pack upload OUT "
        "pvc://CLAIM/PATH` prints)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--name", "Bad_Name", "--storage-uri", "s3://m/s/"],
            "Error: InferenceService name 'Bad_Name' is not valid;",
        ),
        (
            [
                "--name",
                "scibert",
                "--storage-uri",
                "s3://m/s/",
                "--autoscaler",
                "hpa",
                "--min-replicas",
                "0",
            ],
            "Error: --min-replicas 0 needs Knative (--autoscaler kpa);",
        ),
    ],
    ids=["name", "hpa-zero"],
)
def test_cli_bad_input_exits_2_with_nothing_on_stdout(args: list[str], message: str) -> None:
    result = _run([*args, "--no-dockerfile"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(message)


def test_cli_broken_store_exits_2(store_without_report: Path) -> None:
    args = ["--name", "scibert", "--storage-uri", "s3://m/s/", "--no-dockerfile"]
    result = _run([*args, "--from-store", str(store_without_report)])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"Error: model store {store_without_report} has no build-report.json; point "
        "--from-store at the OUT folder of `scibert-pack build`, or rebuild it\n"
    )


@pytest.mark.parametrize(
    ("model_name", "isvc"),
    [("scibert", "scibert"), ("SciBERT_v1.2", "scibert-v1-2"), ("7up", "m-7up")],
)
def test_name_defaults_to_the_store_model(tmp_path: Path, model_name: str, isvc: str) -> None:
    store = write_store(tmp_path / "store", model_name=model_name)
    result = CliRunner().invoke(
        cli,
        ["manifest", "--from-store", str(store), "--storage-uri", "s3://b/m/", "--no-dockerfile"],
    )
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (isvc_doc,) = [d for d in docs if d["kind"] == "InferenceService"]
    assert isvc_doc["metadata"]["name"] == isvc


def test_name_is_required_without_a_store() -> None:
    result = CliRunner().invoke(cli, ["manifest", "--storage-uri", "s3://b/m/"])
    assert result.exit_code == 2
    assert (
        "Missing option '--name' (or pass --from-store OUT to use its model name)" in result.stderr
    )
