"""scibert-pack's jobs as library calls: what each command does, without the command.

`scibert-pack build/serve/upload/manifest/predict --input/explain` and the demo
(demo/run.py) call these, the way `huggingface-cli upload` calls `HfApi.upload_folder`; a
program can call them the same way::

    from scibert_pack import api

    settings = api.build_settings({"name": "scibert", "explain_steps": 20})
    built = api.build(Path("model"), Path("store"), settings)
    with api.serve(built.output) as server:
        done = api.predict_file(api.client_for(server), Path("texts.txt"), Path("out.jsonl"))

Nothing here prints, exits or configures logging: progress lines go to a `ProgressSink`,
failures are `ScibertPackError`s (bad input: `InputError` and its children). Heavy imports
(torch, boto3) wait until a job needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from scibert_pack.archiver.settings import BuildSettings, build_settings
from scibert_pack.errors import InputError
from scibert_pack.progress import ProgressSink, silent

if TYPE_CHECKING:
    from scibert_pack.archiver.build import BuildResult
    from scibert_pack.client.batch import (
        BatchProgress,
        BatchSettings,
        ExplainedTexts,
        ExplainSettings,
    )
    from scibert_pack.client.batch_input import InputFormat
    from scibert_pack.client.inference_client import InferenceClient
    from scibert_pack.kserve.manifest import Manifest
    from scibert_pack.kserve.options import ManifestOptions
    from scibert_pack.serving.server import ServeSettings, TorchServeProcess
    from scibert_pack.storage.backend import Backend
    from scibert_pack.storage.s3 import S3Settings
    from scibert_pack.storage.sync import UploadPlan, UploadProgress, UploadResult

__all__ = [
    "BuildSettings",
    "PlannedUpload",
    "PredictedFile",
    "build",
    "build_settings",
    "client_for",
    "explain_texts",
    "plan_upload",
    "predict_file",
    "serve",
    "upload",
    "write_manifest",
]


# -- build ----------------------------------------------------------------------------------


def build(
    model_dir: Path, out: Path, settings: BuildSettings, *, progress: ProgressSink = silent
) -> BuildResult:
    """Build the model store `out` (model-store/NAME.mar, config/config.properties,
    build-report.json) from the classifier folder `model_dir`.

    `settings` come from `build_settings` (checked values, errors naming the option). The
    store is published with renames, so a failed build leaves the previous one, or nothing.
    """
    from scibert_pack.archiver.build import build as run_build

    return run_build(model_dir, settings, out, progress=progress)


# -- serve ----------------------------------------------------------------------------------


def serve(
    store: Path, settings: ServeSettings | None = None, *, progress: ProgressSink = silent
) -> TorchServeProcess:
    """TorchServe on a built store, not yet started: `with serve(store) as server:` starts it,
    waits until a worker answers, and stops it (and every process it started) on leaving.

    The store is read now, so a missing or broken one fails here. Ports given as 0 are picked
    now (`ServeSettings.on_free_ports()` gives every port 0); `server.inference_url` says where.
    """
    from scibert_pack.serving.server import TorchServeProcess

    return TorchServeProcess(store, settings, progress=progress)


def client_for(server: TorchServeProcess, *, timeout_s: float = 300.0) -> InferenceClient:
    """An inference client of a server `serve` started, with its token when it needs one."""
    from scibert_pack.client.inference_client import InferenceClient

    return InferenceClient(
        server.inference_url, server.model_name, token=server.token(), timeout_s=timeout_s
    )


# -- upload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedUpload:
    """What an upload of a store would do (nothing written yet: this is `--dry-run`)."""

    plan: UploadPlan
    backend: Backend

    @property
    def storage_uri(self) -> str:
        """The version's URI: the storageUri of an InferenceService, once uploaded."""
        return self.plan.storage_uri

    def run(self, on_progress: Callable[[UploadProgress], None] | None = None) -> UploadResult:
        """Carry out the plan; the version is complete (its record written) when this returns."""
        from scibert_pack.storage.sync import run_upload

        return run_upload(self.plan, self.backend, on_progress=on_progress)


def plan_upload(
    store: Path,
    target: str,
    *,
    s3: S3Settings | None = None,
    s3_client: Any = None,
    pvc_mount: Path | None = None,
    delete: bool = False,
    create_bucket: bool = False,
    progress: ProgressSink = silent,
) -> PlannedUpload:
    """Plan the upload of the built store `store` to `target` (s3://bucket/prefix,
    pvc://claim/path with `pvc_mount`, or a local folder) as its own immutable version.

    `s3` configures the S3 client (endpoint, region, profile, checksums); `s3_client` replaces
    it. `create_bucket` creates a missing S3 bucket first. `delete` also plans the removal of
    everything under the target that is not this version.
    """
    from scibert_pack.storage.backend_choice import backend_for
    from scibert_pack.storage.local_store import scan_store
    from scibert_pack.storage.sync import plan_upload as plan
    from scibert_pack.storage.targets import PvcTarget, S3Target, parse_target

    parsed = parse_target(target)
    if isinstance(parsed, PvcTarget) and pvc_mount is None:
        raise InputError(
            f"{target} is a PVC, and no folder where its claim is mounted was given",
            fix="pass pvc_mount (--pvc-mount) with the folder the claim is mounted at, or "
            "copy the store with the kubectl steps of `scibert-pack upload` without it",
        )
    if create_bucket and not isinstance(parsed, S3Target):
        raise InputError(
            f"create_bucket (--create-bucket) is for s3:// URIs, not {target!r}",
            fix="drop it, or upload to an s3:// URI",
        )
    local = scan_store(store)
    backend = backend_for(parsed, s3_settings=s3, s3_client=s3_client, pvc_mount=pvc_mount)
    if create_bucket and isinstance(parsed, S3Target):
        from scibert_pack.storage.s3 import S3Backend

        assert isinstance(backend, S3Backend)
        if backend.create_bucket():
            progress(f"created bucket s3://{parsed.bucket}")
    return PlannedUpload(plan(local, backend, delete=delete), backend)


def upload(
    store: Path,
    target: str,
    *,
    s3: S3Settings | None = None,
    s3_client: Any = None,
    pvc_mount: Path | None = None,
    delete: bool = False,
    create_bucket: bool = False,
    progress: ProgressSink = silent,
    on_progress: Callable[[UploadProgress], None] | None = None,
) -> UploadResult:
    """Upload the built store `store` to `target` as an immutable, verified version (see
    `plan_upload` for the arguments); `result.plan.storage_uri` is the version's URI and
    `result.plan.warnings` what the caller should show.

    Rerunning an interrupted upload resumes it; rerunning a finished one sends nothing.
    """
    planned = plan_upload(
        store,
        target,
        s3=s3,
        s3_client=s3_client,
        pvc_mount=pvc_mount,
        delete=delete,
        create_bucket=create_bucket,
        progress=progress,
    )
    return planned.run(on_progress)


# -- manifest -------------------------------------------------------------------------------


def write_manifest(
    options: ManifestOptions | Mapping[str, Any],
    *,
    store: Path | None = None,
    output: Path | None = None,
    dockerfile: Path | None = None,
    write_dockerfile: bool = True,
) -> Manifest:
    """KServe YAML (and our runtime's Dockerfile) for a model store.

    `options` are ManifestOptions, or their values by field name (storage_uri, protocol, ...),
    where a missing or None `name` is the InferenceService name made from the store's model
    name. With `store` (a built store) the manifest uses its facts (model name, ports,
    timeouts). Writes the YAML to `output` and the Dockerfile to `dockerfile` (which the YAML's
    notes name; `write_dockerfile=False` only names it), each atomically; None skips that file.
    The result holds the YAML, warnings and next steps.
    """
    from scibert_pack.kserve.manifest import build_manifest
    from scibert_pack.kserve.manifest import write_manifest as write
    from scibert_pack.kserve.names import isvc_name_for
    from scibert_pack.kserve.options import ManifestOptions
    from scibert_pack.kserve.store_info import read_store_for_manifest

    facts = read_store_for_manifest(store) if store is not None else None
    if store is not None:
        written = [("output", output), ("dockerfile", dockerfile if write_dockerfile else None)]
        for what, path in written:
            if path is not None and path.resolve().is_relative_to(store.resolve()):
                raise InputError(
                    f"{what} {path} is inside the model store {store}: it would overwrite or "
                    "join the store's files, which upload sends as the model",
                    fix=f"write it beside the store, e.g. {store.resolve().parent / path.name}",
                )
    if not isinstance(options, ManifestOptions):
        values = dict(options)
        if values.get("name") is None:
            if facts is None:
                raise InputError(
                    "a manifest needs a name, and there is no store to take it from",
                    fix="pass name (--model-name), or store (--from-store OUT)",
                )
            values["name"] = isvc_name_for(facts.model_name)
        options = ManifestOptions(**values)
    name = dockerfile.name if dockerfile is not None else "Dockerfile"
    manifest = build_manifest(options, facts, dockerfile_name=name)
    write(manifest, output, dockerfile if write_dockerfile else None)
    return manifest


# -- predict and explain --------------------------------------------------------------------


@dataclass(frozen=True)
class PredictedFile:
    """A `predict_file` run: the final counts; `skipped_lines` are input lines without text;
    `kept_refused` rows an earlier run wrote as refused by the server keep their error record."""

    progress: BatchProgress
    skipped_lines: tuple[int, ...]
    kept_refused: int

    @property
    def all_predicted(self) -> bool:
        return not self.progress.errors and not self.kept_refused


def predict_file(
    client: InferenceClient,
    input_path: Path,
    output: Path | IO[str],
    *,
    input_format: InputFormat | None = None,
    text_field: str = "text",
    settings: BatchSettings | None = None,
    progress: ProgressSink = silent,
    on_batch: Callable[[BatchProgress], None] | None = None,
) -> PredictedFile:
    """Classify every text of `input_path` (lines, JSON lines or CSV; the format from the
    suffix unless given) and write one JSON line per text, in input order, to `output`.

    An `output` file that exists is resumed: finished rows are skipped and new ones appended;
    rows that failed on the server are asked again. A row the server refuses gets an error
    record and the run goes on; the run stops (ClientError) when the server is down.
    `on_batch` gets the counts as rows are written.
    """
    from requests.adapters import HTTPAdapter

    from scibert_pack.client.batch import BatchPredictor, BatchSettings
    from scibert_pack.client.batch_input import input_format as detect_format
    from scibert_pack.client.batch_input import read_input
    from scibert_pack.client.batch_output import ResultSink, ResumableOutput, StreamOutput

    settings = settings or BatchSettings()
    batch = read_input(input_path, detect_format(input_path, input_format), text_field)
    if batch.skipped:
        lines = ", ".join(str(n) for n in batch.skipped[:10])
        more = f" and {len(batch.skipped) - 10} more" if len(batch.skipped) > 10 else ""
        progress(
            f"skipped {len(batch.skipped)} records of {input_path} with an empty "
            f"{text_field!r} (lines {lines}{more}); each result carries its input line"
        )
    # One pooled connection per concurrent request (requests keeps 10 by default).
    for prefix in ("http://", "https://"):
        client.session.mount(prefix, HTTPAdapter(pool_maxsize=settings.concurrency))
    sink: ResultSink
    kept_refused = 0
    if isinstance(output, Path):
        resumable = ResumableOutput(output, batch.rows)
        kept_refused = resumable.kept_refused
        if resumable.finished or resumable.retried:
            again = (
                f"; {len(resumable.retried)} rows that failed on the server are asked again"
                if resumable.retried
                else ""
            )
            progress(
                f"resuming {output}: {len(resumable.finished)} of {len(batch.rows)} rows "
                f"already done{again}"
            )
        sink = resumable
    else:
        sink = StreamOutput(output)
    predictor = BatchPredictor(client, settings, progress=on_batch or _ignore)
    try:
        final = predictor.run(batch.rows, sink)
    finally:
        sink.close()
    return PredictedFile(final, tuple(batch.skipped), kept_refused)


def _ignore(_: object) -> None:
    """No per-batch counts wanted."""


def explain_texts(
    client: InferenceClient,
    texts: Sequence[str],
    settings: ExplainSettings | None = None,
    *,
    with_predictions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExplainedTexts:
    """Explain any number of texts (integrated gradients, on the server), in requests the
    server accepts; per text in input order its explanation and, with `with_predictions`, its
    prediction. `progress(done, total)` runs after each request's answer."""
    from scibert_pack.client.batch import explain_texts as explain

    return explain(client, texts, settings, with_predictions=with_predictions, progress=progress)
