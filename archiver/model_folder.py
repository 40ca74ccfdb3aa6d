"""Checks a Hugging Face classifier folder before anything is built from it.

Only file-level checks (JSON, safetensors headers, which files exist): they catch the folders
users actually get wrong without importing transformers, which keeps `build` fast.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scibert_pack.errors import ModelFolderError
from scibert_pack.layout import CONFIG_FILE, MODEL_STORE_DIR, REPORT_FILE

# Tokenizer files a BERT-family tokenizer can be loaded from, in the order we look for them.
TOKENIZER_SOURCES: tuple[tuple[str, ...], ...] = (
    ("tokenizer.json",),
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
)
TOKENIZER_EXTRAS = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# What `scibert-pack build` writes into its output folder.
_STORE_MARKERS = (REPORT_FILE, CONFIG_FILE, MODEL_STORE_DIR)


@dataclass(frozen=True)
class ModelFolder:
    """A checked classifier folder: what it is and exactly which files the archive needs."""

    path: Path
    architecture: str
    model_type: str
    labels: tuple[str, ...]
    max_positions: int | None
    weight_files: tuple[str, ...]
    tokenizer_files: tuple[str, ...]
    pickle_weights: bool
    warnings: tuple[str, ...]

    @property
    def files(self) -> tuple[str, ...]:
        """Every file to pack, relative to the folder, sorted."""
        return tuple(sorted({"config.json", *self.weight_files, *self.tokenizer_files}))


def inspect_model_folder(path: Path, *, allow_pickle: bool = False) -> ModelFolder:
    """Check `path` is a loadable sequence classifier; one clear ModelFolderError otherwise."""
    shown = _shown(path)
    if not path.exists():
        raise ModelFolderError(
            f"model folder {shown} does not exist",
            fix="pass the folder written by model.save_pretrained(...) and "
            "tokenizer.save_pretrained(...)",
        )
    if not path.is_dir():
        raise ModelFolderError(
            f"model folder {shown} is not a folder",
            fix="pass the folder that holds config.json, the weights and the tokenizer files",
        )
    _refuse_built_store(path, shown)
    config = _read_config(path, shown)
    architecture = _classifier_architecture(config, shown)
    labels = _labels(config, shown)
    weights, pickled = _weight_files(path, shown, allow_pickle=allow_pickle)
    tokenizer = _tokenizer_files(path, shown)
    _check_links(path, shown, {"config.json", *weights, *tokenizer})
    warnings = []
    if all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        warnings.append(
            f"config.json of {shown} has only generic labels ({', '.join(labels)}); responses "
            "will carry them. Set model.config.id2label to real names before save_pretrained"
        )
    return ModelFolder(
        path=path,
        architecture=architecture,
        model_type=str(config.get("model_type", "")),
        labels=labels,
        max_positions=_max_positions(config),
        weight_files=weights,
        tokenizer_files=tokenizer,
        pickle_weights=pickled,
        warnings=tuple(warnings),
    )


def _refuse_built_store(path: Path, shown: str) -> None:
    """`build ./out` on what an earlier build wrote: say so instead of asking for config.json."""
    if (path / "config.json").exists():
        return
    found = [name for name in _STORE_MARKERS if (path / name).exists()]
    if found:
        raise ModelFolderError(
            f"{shown} is a model store built by scibert-pack (it has {', '.join(found)}), "
            "not a model folder",
            fix=f"serve it with: scibert-pack serve {shown}; to build again, pass the folder "
            "model.save_pretrained(...) wrote",
        )


def _check_links(path: Path, shown: str, names: set[str]) -> None:
    """Every file to pack must really live in the folder: a link to /etc/passwd named
    tokenizer.json would otherwise ship that file inside the archive."""
    root = path.resolve()
    allowed = [root]
    if root.parent.name == "snapshots":
        # A Hugging Face cache snapshot links each file to ../../blobs/<hash>.
        allowed.append(root.parent.parent / "blobs")
    for name in sorted(names):
        file = path / name
        target = file.resolve()
        if not any(target.is_relative_to(base) for base in allowed):
            raise ModelFolderError(
                f"{name} in model folder {shown} is a link to {target}, outside the folder; "
                "scibert-pack packs only files that live in the model folder",
                fix=f"replace {file} with a copy of the file you mean to ship "
                f"(cp --remove-destination {target} {file}) and rerun",
            )


def _shown(path: Path) -> str:
    text = str(path)
    return text if path.is_absolute() or text.startswith(".") else f"./{text}"


def _read_config(path: Path, shown: str) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelFolderError(
            f"model folder {shown} has no config.json",
            fix=f"save the model with model.save_pretrained('{shown}')",
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(
            f"config.json of {shown} is not valid JSON ({err})",
            fix=f"save the model again with model.save_pretrained('{shown}')",
        ) from err
    if not isinstance(config, dict):
        raise ModelFolderError(
            f"config.json of {shown} holds a {type(config).__name__}, not a JSON object",
            fix=f"save the model again with model.save_pretrained('{shown}')",
        )
    return config


def _classifier_architecture(config: dict[str, Any], shown: str) -> str:
    archs = config.get("architectures")
    found = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    classifiers = [a for a in found if a.endswith("ForSequenceClassification")]
    if not classifiers:
        named = f"names architectures {found}" if found else "names no architectures"
        raise ModelFolderError(
            f"config.json of {shown} {named}, not a sequence classifier "
            "(*ForSequenceClassification)",
            fix="fine-tune an AutoModelForSequenceClassification and save it with "
            f"model.save_pretrained('{shown}')",
        )
    if config.get("problem_type") == "multi_label_classification":
        raise ModelFolderError(
            f"config.json of {shown} is a multi-label classifier "
            "(problem_type=multi_label_classification); scibert-pack serves single-label "
            "classifiers with softmax probabilities",
            fix="serve a single-label classifier, or set problem_type to "
            "single_label_classification if the model was trained that way",
        )
    return classifiers[0]


def _labels(config: dict[str, Any], shown: str) -> tuple[str, ...]:
    id2label = config.get("id2label")
    fix = (
        "set model.config.id2label = {0: 'first label', 1: ...} (and label2id) and save again "
        f"with model.save_pretrained('{shown}')"
    )
    if not isinstance(id2label, dict) or not id2label:
        raise ModelFolderError(f"config.json of {shown} has no id2label", fix=fix)
    try:
        by_index = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError) as err:
        raise ModelFolderError(
            f"config.json of {shown} has id2label keys that are not class indexes "
            f"({sorted(id2label)})",
            fix=fix,
        ) from err
    if sorted(by_index) != list(range(len(by_index))):
        raise ModelFolderError(
            f"id2label in config.json of {shown} must cover the indexes 0..{len(by_index) - 1} "
            f"exactly, got {sorted(by_index)}",
            fix=fix,
        )
    labels = tuple(by_index[i] for i in range(len(by_index)))
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise ModelFolderError(
            f"id2label in config.json of {shown} has empty or non-text labels {list(labels)}",
            fix=fix,
        )
    if len(set(labels)) != len(labels):
        raise ModelFolderError(
            f"id2label in config.json of {shown} repeats a label {list(labels)}; "
            "labels name the classes in responses and must be distinct",
            fix=fix,
        )
    num_labels = config.get("num_labels")
    if isinstance(num_labels, int) and num_labels != len(labels):
        raise ModelFolderError(
            f"config.json of {shown} says num_labels={num_labels} but id2label has "
            f"{len(labels)} labels",
            fix=fix,
        )
    return labels


def _max_positions(config: dict[str, Any]) -> int | None:
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def _weight_files(path: Path, shown: str, *, allow_pickle: bool) -> tuple[tuple[str, ...], bool]:
    if (path / SAFETENSORS).is_file():
        _check_safetensors(path / SAFETENSORS, shown)
        return (SAFETENSORS,), False
    if (path / SAFETENSORS_INDEX).is_file():
        shards = _index_shards(path, SAFETENSORS_INDEX, shown)
        for shard in shards:
            _check_safetensors(path / shard, shown)
        return (SAFETENSORS_INDEX, *shards), False
    pickled = [name for name in (PICKLE, PICKLE_INDEX) if (path / name).is_file()]
    if not pickled:
        raise ModelFolderError(
            f"model folder {shown} has no weights (looked for {SAFETENSORS}, "
            f"{SAFETENSORS_INDEX}, {PICKLE})",
            fix=f"save the model with model.save_pretrained('{shown}')",
        )
    if not allow_pickle:
        raise ModelFolderError(
            f"model folder {shown} holds only pickle weights ({pickled[0]}); loading a pickle "
            "file can run arbitrary code, so scibert-pack serves safetensors",
            fix=f"convert with model.save_pretrained('{shown}', safe_serialization=True), or "
            "pass --allow-pickle if you trust where the file came from",
        )
    if pickled[0] == PICKLE_INDEX:
        return (PICKLE_INDEX, *_index_shards(path, PICKLE_INDEX, shown)), True
    return (PICKLE,), True


def _index_shards(path: Path, index_name: str, shown: str) -> tuple[str, ...]:
    fix = f"save the model again with model.save_pretrained('{shown}')"
    try:
        index = json.loads((path / index_name).read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelFolderError(
            f"{index_name} in {shown} is not a weight index (no weight_map)", fix=fix
        ) from err
    for shard in shards:
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard.startswith("."):
            raise ModelFolderError(f"{index_name} in {shown} names a bad shard {shard!r}", fix=fix)
        if not (path / shard).is_file():
            raise ModelFolderError(
                f"model folder {shown} is missing weight shard {shard} listed in {index_name}",
                fix=fix,
            )
    return tuple(shards)


def _check_safetensors(file: Path, shown: str) -> None:
    """The header must parse and the tensor data must fit the file: catches cut-off copies."""
    fix = f"save the model again with model.save_pretrained('{shown}')"
    size = file.stat().st_size
    try:
        with file.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise ValueError("header length past the end of the file")
            header = json.loads(fh.read(header_len))
        ends = [
            int(meta["data_offsets"][1]) for key, meta in header.items() if key != "__metadata__"
        ]
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as err:
        raise ModelFolderError(
            f"{file.name} in {shown} is not a valid safetensors file ({err})", fix=fix
        ) from err
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise ModelFolderError(
            f"{file.name} in {shown} is truncated: {size} bytes, its header needs {expected}",
            fix=fix,
        )


def _tokenizer_files(path: Path, shown: str) -> tuple[str, ...]:
    if not any(all((path / name).is_file() for name in group) for group in TOKENIZER_SOURCES):
        looked = ", ".join(" + ".join(group) for group in TOKENIZER_SOURCES)
        raise ModelFolderError(
            f"model folder {shown} has no tokenizer (looked for {looked})",
            fix=f"save it with tokenizer.save_pretrained('{shown}')",
        )
    return tuple(name for name in TOKENIZER_EXTRAS if (path / name).is_file())
