"""`scibert-pack build` refuses broken model folders: one fixture per broken input, exit 2,
one clear message naming the folder, the problem and the fix, and nothing written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.archiver.model_folder import _max_positions
from scibert_pack.cli import cli

Breaker = Callable[[Path], None]


def _edit_config(change: Callable[[dict[str, object]], None]) -> Breaker:
    def breaker(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))

    return breaker


def _remove(*names: str) -> Breaker:
    def breaker(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return breaker


def _truncate_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _garbage_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        },
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def _set(key: str, value: object) -> Breaker:
    return _edit_config(lambda c: c.__setitem__(key, value))


def _delete(key: str) -> Breaker:
    return _edit_config(lambda c: c.pop(key))


CASES: list[tuple[str, Breaker, str]] = [
    (
        "no-config",
        _remove("config.json"),
        "model folder {m} has no config.json; save the model with model.save_pretrained('{m}')",
    ),
    (
        "config-not-json",
        lambda f: (f / "config.json").write_text("{nope"),
        "config.json of {m} is not valid JSON (Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1)); save the model again with model.save_pretrained('{m}')",
    ),
    (
        "config-not-object",
        lambda f: (f / "config.json").write_text("[1, 2]"),
        "config.json of {m} holds a list, not a JSON object; save the model again with "
        "model.save_pretrained('{m}')",
    ),
    (
        "base-model",
        _set("architectures", ["BertModel"]),
        "config.json of {m} names architectures ['BertModel'], not a sequence classifier "
        "(*ForSequenceClassification); fine-tune an AutoModelForSequenceClassification and save "
        "it with model.save_pretrained('{m}')",
    ),
    (
        "no-architectures",
        _delete("architectures"),
        "config.json of {m} names no architectures, not a sequence classifier "
        "(*ForSequenceClassification); fine-tune an AutoModelForSequenceClassification and save "
        "it with model.save_pretrained('{m}')",
    ),
    (
        "multi-label",
        _set("problem_type", "multi_label_classification"),
        "config.json of {m} is a multi-label classifier (problem_type=multi_label_classification);"
        " scibert-pack serves single-label classifiers with softmax probabilities; serve a "
        "single-label classifier, or set problem_type to single_label_classification if the "
        "model was trained that way",
    ),
    (
        "no-id2label",
        _delete("id2label"),
        "config.json of {m} has no id2label; set model.config.id2label = {{0: 'first label', "
        "1: ...}} (and label2id) and save again with model.save_pretrained('{m}')",
    ),
    (
        "id2label-longer-than-the-head",
        _set("id2label", {str(i): f"label {i}" for i in range(5)}),
        "the classifier head of {m} has 3 outputs (classifier.weight of shape [3, 32]) but "
        "id2label in config.json names 5 labels; give id2label one label per output "
        "(model.config.id2label = {{0: ..., 2: ...}}) and save the model again",
    ),
    (
        "tokenizer-json-garbage",
        lambda f: (f / "tokenizer.json").write_bytes(b"\x00garbage"),
        "tokenizer.json in {m} is not a tokenizer the tokenizers library can read (expected "
        "value at line 1 column 1); save the tokenizer again with "
        "tokenizer.save_pretrained('{m}')",
    ),
    (
        "tokenizer-json-not-a-tokenizer",
        lambda f: (f / "tokenizer.json").write_text('{"version": "1.0"}'),
        "tokenizer.json in {m} is not a tokenizer the tokenizers library can read (Model "
        "missing. at line 1 column 18); save the tokenizer again with "
        "tokenizer.save_pretrained('{m}')",
    ),
    (
        "id2label-gap",
        _set("id2label", {"0": "a", "2": "c"}),
        "id2label in config.json of {m} must cover the indexes 0..1 exactly, got [0, 2]; set "
        "model.config.id2label = {{0: 'first label', 1: ...}} (and label2id) and save again with "
        "model.save_pretrained('{m}')",
    ),
    (
        "id2label-bad-keys",
        _set("id2label", {"zero": "a"}),
        "config.json of {m} has id2label keys that are not class indexes (['zero']); set "
        "model.config.id2label = {{0: 'first label', 1: ...}} (and label2id) and save again with "
        "model.save_pretrained('{m}')",
    ),
    (
        "duplicate-labels",
        _set("id2label", {"0": "a", "1": "a", "2": "b"}),
        "id2label in config.json of {m} repeats a label ['a', 'a', 'b']; labels name the classes "
        "in responses and must be distinct; set model.config.id2label = {{0: 'first label', "
        "1: ...}} (and label2id) and save again with model.save_pretrained('{m}')",
    ),
    (
        "num-labels-mismatch",
        _set("num_labels", 5),
        "config.json of {m} says num_labels=5 but id2label has 3 labels; set "
        "model.config.id2label = {{0: 'first label', 1: ...}} (and label2id) and save again with "
        "model.save_pretrained('{m}')",
    ),
    (
        "too-few-positions",
        _set("max_position_embeddings", 4),
        "config.json of {m} says the model reads 4 tokens (from max_position_embeddings); "
        "scibert-pack needs at least 8; build from a model that reads 8 tokens or more",
    ),
    (
        "no-tokenizer",
        _remove("tokenizer.json", "tokenizer_config.json"),
        "model folder {m} has no tokenizer (looked for tokenizer.json, vocab.txt, vocab.json + "
        "merges.txt, spiece.model, sentencepiece.bpe.model); save it with "
        "tokenizer.save_pretrained('{m}')",
    ),
    (
        "no-weights",
        _remove("model.safetensors"),
        "model folder {m} has no weights (looked for model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin); save the model with "
        "model.save_pretrained('{m}')",
    ),
    (
        "pickle-weights",
        _pickle_only,
        "model folder {m} holds only pickle weights (pytorch_model.bin); loading a pickle file "
        "can run arbitrary code, so scibert-pack serves safetensors; convert with "
        "model.save_pretrained('{m}', safe_serialization=True), or pass --allow-pickle if you "
        "trust where the file came from",
    ),
    (
        "truncated-weights",
        _truncate_weights,
        "model.safetensors in {m} is truncated",
    ),
    (
        "garbage-weights",
        _garbage_weights,
        "model.safetensors in {m} is not a valid safetensors file",
    ),
    (
        "missing-shard",
        _missing_shard,
        "model folder {m} is missing weight shard model-00002-of-00002.safetensors listed in "
        "model.safetensors.index.json; save the model again with model.save_pretrained('{m}')",
    ),
]


@pytest.mark.parametrize(("breaker", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_model_folder_is_refused(
    model_copy: Callable[..., Path], tmp_path: Path, breaker: Breaker, expected: str
) -> None:
    folder = model_copy()
    breaker(folder)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(folder), "--name", "m", "-o", str(out)])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: ")
    text = message.removeprefix("Error: ")
    want = expected.format(m=folder)
    assert text == want or (text.startswith(want) and "; save the model again" in text)
    assert not out.exists()
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing", "model folder {m} does not exist"),
        (
            lambda tmp: (tmp / "file").write_text("x") and tmp / "file",
            "model folder {m} is not a folder",
        ),
    ],
    ids=["missing", "a-file"],
)
def test_model_folder_must_be_a_folder(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(cli, ["build", str(path), "--name", "m", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert expected.format(m=path) in result.stderr
    assert not (tmp_path / "o").exists()


def test_pickle_weights_build_with_allow_pickle(
    model_copy: Callable[..., Path], tmp_path: Path
) -> None:
    folder = model_copy()
    _pickle_only(folder)
    args = ["build", str(folder), "--name", "m", "-o", str(tmp_path / "o"), "--allow-pickle"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "model-store" / "m.mar").is_file()


def test_generic_labels_warn(model_copy: Callable[..., Path], tmp_path: Path) -> None:
    folder = model_copy()
    _set("id2label", {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"})(folder)
    result = CliRunner().invoke(
        cli, ["build", str(folder), "--name", "m", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 0
    assert "Warning: config.json of" in result.stderr
    assert "has only generic labels (LABEL_0, LABEL_1, LABEL_2)" in result.stderr


def test_extra_files_are_not_packed(model_copy: Callable[..., Path], tmp_path: Path) -> None:
    """Training leftovers (pickled training_args.bin, checkpoints) never reach the archive."""
    import zipfile

    folder = model_copy()
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "optimizer.pt").write_bytes(b"pickle")
    shutil.copy(folder / "model.safetensors", folder / "pytorch_model.bin")
    result = CliRunner().invoke(
        cli, ["build", str(folder), "--name", "m", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    names = zipfile.ZipFile(tmp_path / "o" / "model-store" / "m.mar").namelist()
    assert not {"training_args.bin", "optimizer.pt", "pytorch_model.bin"} & set(names)


@pytest.mark.parametrize(
    ("config", "tokens"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": 0}, 512),
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514}, 512),
        ({"model_type": "camembert", "max_position_embeddings": 514, "pad_token_id": None}, 513),
        ({"model_type": "bert", "max_position_embeddings": True}, None),
        ({"model_type": "bert"}, None),
    ],
    ids=["bert", "roberta", "xlm-roberta-default-pad", "camembert-no-pad", "bool", "missing"],
)
def test_tokens_the_model_reads_as_the_handler_counts_them(
    config: dict[str, object], tokens: int | None
) -> None:
    """Build caps --max-length with the handler's own rule: RoBERTa-style tables keep
    pad_token_id + 1 rows (transformers' default pad 1 when absent, 0 when null)."""
    assert _max_positions(config) == tokens
