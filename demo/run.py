"""The demo run: every step of the project's path, on a real small model, in one work folder.

train (or reuse) -> build -> serve on free ports -> v2 infer and explain -> HTML report ->
upload to a local S3 server and to a PVC-style folder -> InferenceService manifest. Servers
run inside `with` blocks, so an error or Ctrl-C stops them too. Rerunning in the same folder
reuses the trained model (when the corpus is unchanged) and rewrites everything else.

WORKDIR/
  model/                   the trained classifier (+ demo-training.json)
  store/                   the model store (`scibert-pack build` output)
  run/                     TorchServe's run folder (logs/, config.properties)
  explanations.html        the explanation report
  s3.log                   the local S3 server's log
  pvc/                     stands for the mounted claim of pvc://demo-claim/models
  inferenceservice.yaml    KServe manifest for the S3 copy, + Dockerfile.scibert-pack
  summary.json             what the run produced, with timings
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scibert_pack.client.inference_client import ServedExplanation, ServedPrediction
from scibert_pack.demo.train import TrainResult, TrainSettings
from scibert_pack.errors import InputError
from scibert_pack.progress import ProgressSink, silent

# The first is the sentence of the blog post this project started from.
DEMO_TEXTS: tuple[str, ...] = (
    "Risk assessment implications of site-specific oral relative bioavailability.",
    "Single-cell atlas of gene expression in the developing zebrafish heart.",
    "Photocatalytic water splitting on titanium dioxide nanosheets.",
    "Gravitational lensing of distant quasars by galaxy clusters.",
    "A randomized trial of aspirin for the prevention of preeclampsia.",
    "Scalable Byzantine fault tolerance for permissioned blockchains.",
)
# Dummy keys for the throwaway local S3 server: it accepts any.
_S3_KEY_ID = "scibert-pack-demo"
_S3_SECRET = "scibert-pack-demo-secret"
_S3_REGION = "us-east-1"
DOCKERFILE_NAME = "Dockerfile.scibert-pack"


@dataclass(frozen=True)
class DemoSettings:
    workdir: Path
    # A trained classifier to use instead of training one (skips the training step).
    model_dir: Path | None = None
    texts: tuple[str, ...] = DEMO_TEXTS
    model_name: str = "sci-fields"
    bucket: str = "demo-models"
    s3_prefix: str = "sci-fields"
    pvc_uri: str = "pvc://demo-claim/models"
    train: TrainSettings = field(default_factory=TrainSettings)
    ready_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.texts or any(not t.strip() for t in self.texts):
            raise InputError(
                "the demo needs at least one text, and no empty ones",
                fix="pass non-empty texts, or none for the built-in ones",
            )
        if self.model_dir is not None and not self.model_dir.is_dir():
            raise InputError(
                f"--model-dir {self.model_dir} is not a folder",
                fix="pass a saved classifier folder (config.json, weights, tokenizer), or "
                "drop --model-dir to train the demo model",
            )
        if not self.pvc_uri.startswith("pvc://"):
            raise InputError(
                f"PVC URI {self.pvc_uri!r} does not start with pvc://",
                fix="use e.g. pvc://demo-claim/models",
            )


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float


@dataclass(frozen=True)
class DemoResult:
    workdir: Path
    model_dir: Path
    training: TrainResult | None  # None when --model-dir was given
    store: Path
    model_name: str
    served_at: str  # TorchServe's inference URL while it ran
    predictions: tuple[ServedPrediction, ...]
    explanations: tuple[ServedExplanation, ...]
    report: Path
    s3_uri: str
    s3_endpoint: str
    pvc_uri: str
    pvc_mount: Path
    manifest: Path
    dockerfile: Path
    manifest_warnings: tuple[str, ...]
    steps: tuple[Step, ...]
    summary_file: Path

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


class _Steps:
    def __init__(self, progress: ProgressSink) -> None:
        self.progress = progress
        self.done: list[Step] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.progress(f"== {name}")
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        self.done.append(Step(name, seconds))
        self.progress(f"   {name}: {seconds:.1f} s")


def run_demo(settings: DemoSettings, *, progress: ProgressSink = silent) -> DemoResult:
    """Every job of scibert-pack in turn, each through its `scibert_pack.api` call."""
    from scibert_pack import api
    from scibert_pack.client.report_html import write_report
    from scibert_pack.handlers.settings import HandlerSettings

    work = settings.workdir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    steps = _Steps(progress)
    training: TrainResult | None = None
    if settings.model_dir is not None:
        model_dir = settings.model_dir
        progress(f"using the classifier in {model_dir} (no training)")
    else:
        from scibert_pack.demo.corpus import load_corpus
        from scibert_pack.demo.train import ensure_model

        with steps.step("train"):
            corpus = load_corpus()
            progress(
                f"corpus: {len(corpus.labels)} fields, {len(corpus.train)} training and "
                f"{len(corpus.held_out)} held-out sentences"
            )
            training = ensure_model(corpus, work / "model", settings.train, progress=progress)
            progress(f"held-out accuracy: {training.held_out_accuracy:.3f}")
        model_dir = training.model_dir

    store = work / "store"
    with steps.step("build"):
        build_settings = api.BuildSettings(
            name=settings.model_name,
            profile="kserve",  # the store that is uploaded; serving here overrides addresses
            # At most 128 tokens: fewer when the model reads fewer.
            handler=HandlerSettings(merge_subwords=True, max_length=128),
        )
        api.build(model_dir, store, build_settings, progress=progress)

    served_at, predictions, explanations = _serve_and_ask(
        settings, store, work / "run", steps, progress
    )

    report = work / "explanations.html"
    with steps.step("report"):
        write_report(
            report,
            explanations,
            probabilities=[p.probabilities for p in predictions],
            title="scibert-pack demo: why the model chose each field",
            model=settings.model_name,
        )
        progress(f"wrote {report}")

    s3_uri, endpoint = _upload_s3(settings, store, work, steps, progress)
    pvc_mount = work / "pvc"
    with steps.step("upload to PVC"):
        pvc_mount.mkdir(parents=True, exist_ok=True)
        pvc_uri = api.upload(store, settings.pvc_uri, pvc_mount=pvc_mount).plan.storage_uri
        progress(f"storageUri {pvc_uri} (claim mounted at {pvc_mount})")

    manifest, dockerfile = work / "inferenceservice.yaml", work / DOCKERFILE_NAME
    with steps.step("manifest"):
        written = api.write_manifest(
            {"storage_uri": s3_uri}, store=store, output=manifest, dockerfile=dockerfile
        )
        warnings = tuple(f"[{w.code}] {w.message}" for w in written.warnings)
        progress(f"wrote {manifest} and {dockerfile}")

    result = DemoResult(
        workdir=work,
        model_dir=model_dir,
        training=training,
        store=store,
        model_name=settings.model_name,
        served_at=served_at,
        predictions=tuple(predictions),
        explanations=tuple(explanations),
        report=report,
        s3_uri=s3_uri,
        s3_endpoint=endpoint,
        pvc_uri=pvc_uri,
        pvc_mount=pvc_mount,
        manifest=manifest,
        dockerfile=dockerfile,
        manifest_warnings=warnings,
        steps=tuple(steps.done),
        summary_file=work / "summary.json",
    )
    _write_summary(result)
    return result


def _serve_and_ask(
    settings: DemoSettings, store: Path, run_dir: Path, steps: _Steps, progress: ProgressSink
) -> tuple[str, list[ServedPrediction], list[ServedExplanation]]:
    from scibert_pack import api
    from scibert_pack.serving.server import ServeSettings

    serve = ServeSettings.on_free_ports(run_dir=run_dir, ready_timeout_s=settings.ready_timeout_s)
    server = api.serve(store, serve, progress=progress)
    with ExitStack() as running:
        with steps.step("serve: start TorchServe"):
            running.enter_context(server)
        with steps.step("v2 infer + explain"):
            # In requests the server accepts (it caps texts per explain request), in order.
            explained = api.explain_texts(
                api.client_for(server), settings.texts, with_predictions=True
            )
            predictions = list(explained.predictions or ())
            explanations = list(explained.explanations)
        with steps.step("serve: stop TorchServe"):
            running.close()
    return server.inference_url, predictions, explanations


def _upload_s3(
    settings: DemoSettings, store: Path, work: Path, steps: _Steps, progress: ProgressSink
) -> tuple[str, str]:
    from scibert_pack import api
    from scibert_pack.demo.local_services import LocalS3Server
    from scibert_pack.storage.s3 import S3Settings

    with steps.step("upload to S3"), LocalS3Server(work / "s3.log") as s3:
        progress(f"local S3 server (moto) on {s3.endpoint}")
        client = _s3_client(s3.endpoint)
        client.create_bucket(Bucket=settings.bucket)
        uri = api.upload(
            store,
            f"s3://{settings.bucket}/{settings.s3_prefix}",
            s3=S3Settings(endpoint_url=s3.endpoint, region=_S3_REGION),
            s3_client=client,
        ).plan.storage_uri
        progress(f"storageUri {uri}")
        progress("stopping the local S3 server")
        return uri, s3.endpoint


def _s3_client(endpoint: str) -> Any:
    import boto3

    # Explicit dummy keys for this one client: nothing from the user's AWS setup is read or
    # printed, and the environment is left alone.
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=_S3_REGION,
        aws_access_key_id=_S3_KEY_ID,
        aws_secret_access_key=_S3_SECRET,
    )


def summary_json(result: DemoResult) -> dict[str, Any]:
    training = result.training
    return {
        "schema": "scibert-pack/demo-summary/v1",
        "model_dir": str(result.model_dir),
        "trained": None if training is None else training.trained,
        "held_out_accuracy": None if training is None else training.held_out_accuracy,
        "store": str(result.store),
        "model_name": result.model_name,
        "predictions": [
            {"text": p.text, "label": p.label, "probability": p.probabilities[p.label]}
            for p in result.predictions
        ],
        "report": str(result.report),
        "storage_uris": {"s3": result.s3_uri, "pvc": result.pvc_uri},
        "manifest": str(result.manifest),
        "dockerfile": str(result.dockerfile),
        "steps": [{"name": s.name, "seconds": round(s.seconds, 2)} for s in result.steps],
    }


def _write_summary(result: DemoResult) -> None:
    from scibert_pack.files import atomic_write_text

    atomic_write_text(result.summary_file, json.dumps(summary_json(result), indent=2) + "\n")
