"""Demo training on a tiny base model and a tiny corpus (seconds, not minutes): the saved folder
is a classifier `build` accepts, with the corpus's fields; an up-to-date model is reused, a
changed corpus or setting retrains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scibert_pack.archiver.model_folder import inspect_model_folder
from scibert_pack.demo.corpus import Corpus, load_corpus, parse_corpus
from scibert_pack.demo.train import RECORD_NAME, TrainSettings, ensure_model
from scibert_pack.errors import InputError

FAST = TrainSettings(epochs=1, batch_size=8)


def _small_corpus(extra: str = "") -> Corpus:
    """The first five sentences of each shipped field (four to train on, one held out)."""
    full = load_corpus()
    rows = [
        f"{label}\t{e.text}\n"
        for label in full.labels
        for e in [x for x in full.train if x.label == label][:4]
        + [x for x in full.held_out if x.label == label][:1]
    ]
    return parse_corpus(("".join(rows) + extra).encode())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> tuple[Path, Corpus]:
    out = tmp_path_factory.mktemp("demo-train") / "model"
    corpus = _small_corpus()
    result = ensure_model(corpus, out, FAST, base=tiny_bert)
    assert result.trained
    return out, corpus


def test_saved_folder_is_a_classifier_of_the_corpus_fields(trained: tuple[Path, Corpus]) -> None:
    out, corpus = trained
    folder = inspect_model_folder(out)
    assert folder.labels == corpus.labels
    assert folder.architecture == "BertForSequenceClassification"
    assert "model.safetensors" in folder.weight_files


def test_record_names_the_corpus_and_the_accuracy(trained: tuple[Path, Corpus]) -> None:
    out, corpus = trained
    record = json.loads((out / RECORD_NAME).read_text(encoding="utf-8"))
    assert record["identity"]["corpus_sha256"] == corpus.sha256
    assert record["held_out_examples"] == len(corpus.held_out) == 6
    assert record["train_examples"] == len(corpus.train) == 24
    assert [row[2] for row in record["per_label"]] == [1] * 6
    assert record["held_out_accuracy"] == sum(row[1] for row in record["per_label"]) / 6


def test_up_to_date_model_is_reused(trained: tuple[Path, Corpus], tiny_bert: Path) -> None:
    out, corpus = trained
    weights = (out / "model.safetensors").stat().st_mtime_ns
    messages: list[str] = []
    again = ensure_model(corpus, out, FAST, base=tiny_bert, progress=messages.append)
    assert not again.trained
    assert (out / "model.safetensors").stat().st_mtime_ns == weights
    record = json.loads((out / RECORD_NAME).read_text(encoding="utf-8"))
    assert again.held_out_accuracy == record["held_out_accuracy"]
    assert messages == [f"reusing the trained model in {out} (corpus and settings unchanged)"]


@pytest.mark.parametrize(
    ("corpus_extra", "settings"),
    [
        pytest.param("biology\tA newly added sentence about cells.\n", FAST, id="corpus-changed"),
        pytest.param("", TrainSettings(epochs=1, batch_size=8, seed=1), id="settings-changed"),
    ],
)
def test_changes_retrain_and_replace_the_folder(
    tmp_path: Path, tiny_bert: Path, corpus_extra: str, settings: TrainSettings
) -> None:
    out = tmp_path / "model"
    ensure_model(_small_corpus(), out, FAST, base=tiny_bert)
    changed = _small_corpus(corpus_extra)
    messages: list[str] = []
    result = ensure_model(changed, out, settings, base=tiny_bert, progress=messages.append)
    assert result.trained
    assert messages == ["epoch 1/1: " + messages[0].split(": ", 1)[1]]
    record = json.loads((out / RECORD_NAME).read_text(encoding="utf-8"))
    assert record["identity"]["corpus_sha256"] == changed.sha256
    assert record["identity"]["settings"]["seed"] == settings.seed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind


def test_training_is_deterministic(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = _small_corpus()
    ensure_model(corpus, tmp_path / "a", FAST, base=tiny_bert)
    ensure_model(corpus, tmp_path / "b", FAST, base=tiny_bert)
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"epochs": 0},
            "training epochs 0 is out of range (expected 1 to 100); set the epochs between 1 and 100",
            id="epochs",
        ),
        pytest.param(
            {"batch_size": 0},
            "training batch size 0 is out of range (expected 1 to 1024); set the batch size between 1 and 1024",
            id="batch-size",
        ),
        pytest.param(
            {"learning_rate": 0.0},
            "learning rate 0.0 is out of range (expected 0 < lr < 1); use e.g. 1e-4",
            id="learning-rate",
        ),
        pytest.param(
            {"warmup_fraction": 1.0},
            "warm-up fraction 1.0 is out of range (expected 0 to < 1); use e.g. 0.1",
            id="warmup",
        ),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InputError) as caught:
        TrainSettings(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message
