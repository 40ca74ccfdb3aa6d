"""scibert_pack.api: the jobs as library calls, the way the CLI and the demo call them.

Bad input is a ScibertPackError naming the option, the value and what is allowed (the same
messages the CLI shows); one run goes build -> serve -> predict_file -> explain_texts through
the api against a real TorchServe, and one upload -> write_manifest on the built store.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from scibert_pack import api
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli.build import build as build_command
from scibert_pack.cli.query import explain as explain_command
from scibert_pack.cli.query import predict as predict_command
from scibert_pack.client.batch import BatchSettings, ExplainSettings
from scibert_pack.errors import InputError, ModelFolderError, ScibertPackError, StoreError
from scibert_pack.handlers.settings import (
    HandlerSettings,
    SettingsError,
    declarations,
    option_of,
)
from scibert_pack.serving.server import ServeSettings

# -- settings: one declaration read by validation, messages and the click options ------------

# (id, values, error class, exact message). The messages name the `build` option, as the CLI's.
BAD_SETTINGS: list[tuple[str, dict[str, Any], type[ScibertPackError], str]] = [
    ("no-name", {"batch_size": 4}, InputError, "a model name is required; pass --model-name, e.g. scibert"),
    ("batch-size", {"name": "m", "batch_size": 0}, InputError, "--batch-size 0 is out of range (expected 1 to 1024); pass --batch-size between 1 and 1024"),
    ("request-size", {"name": "m", "max_request_bytes": 10}, InputError, "--max-request-size 10 is out of range (expected 1024 to 2147483647); pass --max-request-size between 1024 and 2147483647"),
    ("profile", {"name": "m", "profile": "cloud"}, InputError, "--profile 'cloud' is not one of local, kserve; pass --profile local or kserve"),
    ("archive-format", {"name": "m", "archive_format": "zip"}, InputError, "--archive-format 'zip' is not one of zip-store, default, tgz, no-archive; pass --archive-format zip-store or default or tgz or no-archive"),
    ("token-auth", {"name": "m", "token_auth": "yes"}, InputError, "--token-auth 'yes' is not true or false; pass --token-auth or not"),
    ("steps-text", {"name": "m", "explain_steps": "ten"}, InputError, "--explain-steps 'ten' is not a whole number; pass --explain-steps between 1 and 500"),
    ("steps-bool", {"name": "m", "max_text_chars": True}, InputError, "--max-text-chars True is not a whole number; pass --max-text-chars between 1 and 10000000"),
    ("steps-over-default-cap", {"name": "m", "explain_steps": 900}, InputError, "--explain-steps 900 is more than the default --max-explain-steps 500 (the most steps a request may ask for); pass --explain-steps between 1 and 500, or add --max-explain-steps 900 or more"),
    ("cap-under-default-steps", {"name": "m", "max_explain_steps": 20}, InputError, "--max-explain-steps 20 is below the default --explain-steps 50 (the steps an explanation takes when a request names none); pass --max-explain-steps 50 or more, or add --explain-steps between 1 and 20"),
    ("both-given", {"name": "m", "explain_steps": 60, "max_explain_steps": 40}, InputError, "--explain-steps 60 is more than --max-explain-steps 40; pass --explain-steps between 1 and 40, or --max-explain-steps 60 or more"),
    ("device", {"name": "m", "device": "gpu"}, InputError, "--device 'gpu' is not one of auto, cpu, cuda; pass --device auto or cpu or cuda"),
    ("merge-subwords", {"name": "m", "merge_subwords": 1}, InputError, "--merge-subwords 1 is not true or false; pass --merge-subwords or --no-merge-subwords"),
    ("name", {"name": "../evil"}, InputError, "model name '../evil' is not allowed: it is the key in request URLs and must match [A-Za-z0-9][A-Za-z0-9_.-]*, at most 200 characters; pass --model-name with letters, digits, '.', '_' or '-', e.g. --model-name scibert"),
    ("label-agreement-nan", {"name": "m", "min_label_agreement": float("nan")}, InputError, "--min-label-agreement nan is out of range (expected 0 to 1); pass --min-label-agreement between 0 and 1"),
    ("label-agreement-text", {"name": "m", "min_label_agreement": "high"}, InputError, "--min-label-agreement 'high' is not a number; pass --min-label-agreement between 0 and 1"),
    ("workers", {"name": "m", "min_workers": 3}, InputError, "--max-workers 2 is below --min-workers 3; pass --max-workers 3 or more"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "error", "message"), [c[1:] for c in BAD_SETTINGS], ids=[c[0] for c in BAD_SETTINGS]
)
def test_bad_settings_name_the_option(
    values: dict[str, Any], error: type[ScibertPackError], message: str
) -> None:
    with pytest.raises(error) as caught:
        api.build_settings(values)
    assert type(caught.value) is error
    assert str(caught.value) == message


def test_an_unknown_setting_lists_the_known_ones() -> None:
    with pytest.raises(InputError) as caught:
        api.build_settings({"name": "m", "batch_sise": 4})
    message, _, known = str(caught.value).partition("; use one of ")
    assert message == "unknown build setting(s) batch_sise"
    assert {"batch_size", "explain_steps", "ports"} <= set(known.split(", "))


def test_good_settings_reach_the_handler() -> None:
    settings = api.build_settings({"name": "m", "explain_steps": 20, "batch_size": 4})
    assert (settings.batch_size, settings.handler.explain_steps) == (4, 20)
    assert settings.handler.max_explain_steps == HandlerSettings.max_explain_steps


def test_settings_errors_carry_their_fields() -> None:
    """The library reads these, never the message text."""
    with pytest.raises(SettingsError) as caught:
        HandlerSettings(explain_steps=600)
    err = caught.value
    assert (err.key, err.value, err.low, err.high, err.bound_by) == (
        "explain_steps", 600, 1, 500, "max_explain_steps"
    )  # fmt: skip
    assert str(err) == "explain_steps must be between 1 and 500, got 600"  # the worker's words


@pytest.mark.parametrize(
    ("command", "cls"),
    [
        (build_command, HandlerSettings),
        (build_command, BuildSettings),
        (predict_command, BatchSettings),
        (explain_command, ExplainSettings),
    ],
    ids=["build-handler", "build", "predict", "explain"],
)
def test_every_declared_setting_is_an_option_with_its_declaration(
    command: click.Command, cls: type
) -> None:
    """The options are made from the declarations: same spelling, default, choices, help."""
    params = {p.name: p for p in command.params if p.name is not None}
    declared = declarations(cls)
    if cls is HandlerSettings:  # build's own --max-length (None: the model's maximum) sets it
        declared.pop("max_length")
    assert set(declared) <= set(params)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, d in declared.items():
        param = params[key]
        assert isinstance(param, click.Option)
        assert option_of(key, d) in param.opts, key
        assert param.required or param.default == defaults[key], key
        assert param.help is not None and param.help.startswith(d.help), key
        if d.choices:
            assert isinstance(param.type, click.Choice)
            assert tuple(param.type.choices) == d.choices, key
        if isinstance(d.high, int):
            assert param.help.endswith(f"Range: {d.low} to {d.high}."), key


CLIENT_SETTINGS: list[tuple[str, Callable[[], object], str]] = [
    ("predict-concurrency", lambda: BatchSettings(concurrency=0), "--concurrency 0 is out of range (expected 1 to 256); pass --concurrency between 1 and 256"),
    ("predict-batch-texts", lambda: BatchSettings(texts_per_request=257), "--batch-texts 257 is out of range (expected 1 to 256); pass --batch-texts between 1 and 256"),
    ("predict-retries", lambda: BatchSettings(retries=-1), "--retries -1 is out of range (expected 0 to 20); pass --retries between 0 and 20"),
    ("explain-concurrency", lambda: ExplainSettings(concurrency=9), "--concurrency 9 is out of range (expected 1 to 8); pass --concurrency between 1 and 8"),
    ("explain-batch-texts", lambda: ExplainSettings(texts_per_request="8"), "--batch-texts '8' is not a whole number; pass --batch-texts between 1 and 256"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"), [c[1:] for c in CLIENT_SETTINGS], ids=[c[0] for c in CLIENT_SETTINGS]
)
def test_client_settings_name_their_option(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InputError) as caught:
        make()
    assert str(caught.value) == message


def test_a_new_handler_setting_needs_only_its_declaration() -> None:
    """Every field of HandlerSettings is declared: validation, messages and options follow."""
    assert set(declarations(HandlerSettings)) == {
        f.name for f in dataclasses.fields(HandlerSettings)
    }


# -- jobs: bad input is a ScibertPackError before anything is written ----------------------


def _empty(path: Path) -> Path:
    path.mkdir()
    return path


JOB_ERRORS: list[tuple[str, Callable[[Path], object], type[ScibertPackError], str]] = [
    ("build-no-model-folder", lambda t: api.build(t / "nothing", t / "out", api.build_settings({"name": "m"})), ModelFolderError, "nothing"),
    ("serve-no-store", lambda t: api.serve(_empty(t / "store")), StoreError, "store"),
    ("upload-pvc-without-mount", lambda t: api.plan_upload(t, "pvc://claim/models"), InputError, "pvc://claim/models is a PVC, and no folder where its claim is mounted was given"),
    ("create-bucket-not-s3", lambda t: api.plan_upload(t, str(t / "dest"), create_bucket=True), InputError, "create_bucket (--create-bucket) is for s3:// URIs"),
    ("manifest-without-name", lambda t: api.write_manifest({"storage_uri": "s3://b/p"}), InputError, "a manifest needs a name, and there is no store to take it from"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("job", "error", "text"), [c[1:] for c in JOB_ERRORS], ids=[c[0] for c in JOB_ERRORS]
)
def test_bad_job_input_is_a_scibert_pack_error(
    tmp_path: Path, job: Callable[[Path], object], error: type[ScibertPackError], text: str
) -> None:
    with pytest.raises(error) as caught:
        job(tmp_path)
    assert text in str(caught.value)
    assert caught.value.fix, "every error says what to do next"


def test_build_max_length_over_the_model_is_named_by_its_option(
    tiny_bert: Path, tmp_path: Path
) -> None:
    settings = api.build_settings({"name": "m", "max_length": 100})
    with pytest.raises(InputError) as caught:
        api.build(tiny_bert, tmp_path / "out", settings)
    assert str(caught.value) == (
        f"--max-length 100 is more than {tiny_bert} can read (64 tokens, from "
        "max_position_embeddings in config.json); pass --max-length between 8 and 64"
    )
    assert not (tmp_path / "out").exists()


# -- end to end through the api, against a real TorchServe -----------------------------------

TEXTS = [
    "Risk assessment of oral relative bioavailability.",
    "Gravitational lensing of distant quasars.",
    "",
    "Byzantine fault tolerance for blockchains.",
]


def test_build_serve_predict_explain_through_the_api(tiny_bert: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    settings = api.build_settings(
        {"name": "tiny", "profile": "local", "min_workers": 1, "max_workers": 1}
    )
    built = api.build(tiny_bert, tmp_path / "store", settings, progress=lines.append)
    assert built.archive == tmp_path / "store" / "model-store" / "tiny.mar"
    assert lines and lines[-1].startswith("built ")
    source = tmp_path / "texts.jsonl"  # a record with an empty text is skipped, and said so
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    results = tmp_path / "predictions.jsonl"
    serve = ServeSettings.on_free_ports(run_dir=tmp_path / "run", ready_timeout_s=180)
    with api.serve(built.output, serve) as server:
        client = api.client_for(server)
        said: list[str] = []
        done = api.predict_file(client, source, results, progress=said.append)
        again = api.predict_file(client, source, results, progress=said.append)
        explained = api.explain_texts(client, [TEXTS[0], TEXTS[1]], with_predictions=True)
    assert done.all_predicted and done.skipped_lines == (3,)
    assert (done.progress.written, done.progress.total) == (3, 3)
    assert (again.progress.written, again.progress.skipped) == (0, 3)
    assert said[0].startswith(f"skipped 1 records of {source} with an empty 'text' (lines 3)")
    assert any(line.startswith(f"resuming {results}: 3 of 3 rows already done") for line in said)
    records = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == [t for t in TEXTS if t]
    labels = set(yaml.safe_load((tiny_bert / "config.json").read_text())["id2label"].values())
    for record in records:
        assert record["label"] in labels
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert [e.text for e in explained.explanations] == TEXTS[:2]
    assert explained.predictions is not None
    for explanation, prediction in zip(explained.explanations, explained.predictions, strict=True):
        assert explanation.label == prediction.label  # explains the predicted label
        assert len(explanation.words) == len(explanation.importances) > 0


def test_upload_then_manifest_through_the_api(tiny_bert: Path, tmp_path: Path) -> None:
    built = api.build(tiny_bert, tmp_path / "store", api.build_settings({"name": "tiny"}))
    mount = _empty(tmp_path / "claim")  # where pvc://claim is mounted here
    target = "pvc://claim/models"
    planned = api.plan_upload(built.output, target, pvc_mount=mount)
    assert planned.plan.to_upload and not any(mount.iterdir()), "a plan writes nothing"
    uploaded = api.upload(built.output, target, pvc_mount=mount)
    assert uploaded.plan.storage_uri == planned.storage_uri
    assert uploaded.plan.storage_uri.startswith(f"{target}/")
    assert sorted(uploaded.uploaded) == sorted(f.path for f in planned.plan.to_upload)
    assert not api.upload(built.output, target, pvc_mount=mount).uploaded, "a rerun sends none"
    manifest = api.write_manifest(
        {"storage_uri": uploaded.plan.storage_uri},
        store=built.output,
        output=tmp_path / "isvc.yaml",
        dockerfile=tmp_path / "Dockerfile.scibert-pack",
    )
    written = list(yaml.safe_load_all((tmp_path / "isvc.yaml").read_text(encoding="utf-8")))
    assert written == list(yaml.safe_load_all(manifest.yaml))
    service = next(d for d in written if d["kind"] == "InferenceService")
    assert service["metadata"]["name"] == "tiny"
    assert service["spec"]["predictor"]["model"]["storageUri"] == uploaded.plan.storage_uri
    assert (tmp_path / "Dockerfile.scibert-pack").is_file() == (manifest.dockerfile is not None)
