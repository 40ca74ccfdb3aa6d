"""Checks a Hugging Face classifier folder before anything is built from it.

Only file-level checks (JSON, safetensors headers, which files exist): they catch the folders
users actually get wrong without importing transformers, which keeps `build` fast.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scibert_pack.errors import ModelFolderError
from scibert_pack.files import load_json
from scibert_pack.handlers.protocol import product_past
from scibert_pack.handlers.settings import usable_positions
from scibert_pack.layout import CONFIG_FILE, MODEL_STORE_DIR, REPORT_FILE

# The last layer of a *ForSequenceClassification head (out_features = labels): BERT, DistilBERT,
# ALBERT, DeBERTa name it classifier; RoBERTa, ELECTRA, MPNet, XLM-R classifier.out_proj.
HEAD_WEIGHTS = ("classifier.weight", "classifier.out_proj.weight")
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
# Bits per element of each safetensors dtype (the format's own list, sub-byte floats included).
SAFETENSORS_DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
# What `scibert-pack build` writes into its output folder.
_STORE_MARKERS = (REPORT_FILE, CONFIG_FILE, MODEL_STORE_DIR)


@dataclass(frozen=True)
class ModelFolder:
    """A checked classifier folder: what it is and exactly which files the archive needs."""

    path: Path
    architecture: str
    model_type: str
    labels: tuple[str, ...]
    # Tokens the model reads (max_position_embeddings less RoBERTa's offset), if config.json says.
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
    weights, pickled, shapes = _weight_files(path, shown, allow_pickle=allow_pickle)
    _check_head(shapes, labels, shown)
    tokenizer = _tokenizer_files(path, shown)
    _check_links(path, shown, {"config.json", *weights, *tokenizer})
    if "tokenizer.json" in tokenizer:  # read only once it is known to live in the folder
        _check_tokenizer_json(path / "tokenizer.json", shown)
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
        config = load_json(config_file.read_text(encoding="utf-8"))
    except ValueError as err:  # bad UTF-8 or JSON, too deep, a number past Python's limit
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
            f"({_short(sorted(id2label))})",
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
    """Tokens the model reads, computed as the handler does (RoBERTa offsets subtracted)."""
    value = config.get("max_position_embeddings")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    # transformers' RoBERTa default when the key is missing; the handler reads None as 0.
    pad = config.get("pad_token_id", 1)
    pad = pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 0
    return usable_positions(str(config.get("model_type", "")), value, pad)


Shapes = dict[str, list[int]]


def _weight_files(
    path: Path, shown: str, *, allow_pickle: bool
) -> tuple[tuple[str, ...], bool, Shapes]:
    """(weight files, whether they are pickles, each safetensors tensor's shape by name)."""
    if (path / SAFETENSORS).is_file():
        return (SAFETENSORS,), False, _check_safetensors(path / SAFETENSORS, shown)
    if (path / SAFETENSORS_INDEX).is_file():
        shards = _index_shards(path, SAFETENSORS_INDEX, shown)
        shapes: Shapes = {}
        for shard in shards:
            shapes.update(_check_safetensors(path / shard, shown))
        return (SAFETENSORS_INDEX, *shards), False, shapes
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
        return (PICKLE_INDEX, *_index_shards(path, PICKLE_INDEX, shown)), True, {}
    return (PICKLE,), True, {}


def _check_head(shapes: Shapes, labels: tuple[str, ...], shown: str) -> None:
    """The classifier's last layer gives one output per label: a mismatch loads in no worker
    (transformers refuses the shapes), so every worker of the archive would fail at start."""
    for name in HEAD_WEIGHTS:
        shape = shapes.get(name)
        if shape is not None and len(shape) == 2 and shape[0] != len(labels):
            raise ModelFolderError(
                f"the classifier head of {shown} has {shape[0]} outputs ({name} of shape "
                f"{shape}) but id2label in config.json names {len(labels)} labels",
                fix="give id2label one label per output (model.config.id2label = {0: ..., "
                f"{shape[0] - 1}: ...}}) and save the model again",
            )


def _index_shards(path: Path, index_name: str, shown: str) -> tuple[str, ...]:
    fix = f"save the model again with model.save_pretrained('{shown}')"
    try:
        index = load_json((path / index_name).read_text(encoding="utf-8"))
    except ValueError as err:  # not JSON or UTF-8, nested too deeply, a number past the limit
        raise ModelFolderError(
            f"{index_name} in {shown} is not valid JSON ({err})", fix=fix
        ) from err
    try:
        shards = sorted(set(index["weight_map"].values()))
    except (KeyError, TypeError, AttributeError) as err:
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


def _check_safetensors(file: Path, shown: str) -> Shapes:
    """The header must describe the file exactly, as the format requires: known dtypes, each
    tensor's bytes = its shape x dtype size, offsets that tile the data section with no gap or
    overlap. Catches cut-off copies and crafted headers before TorchServe loads them."""
    fix = f"save the model again with model.save_pretrained('{shown}')"
    size = file.stat().st_size
    try:
        with file.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError(f"{len(head)} bytes, too short for the 8-byte header length")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise ValueError(f"header length {header_len} past the end of the file")
            header = load_json(fh.read(header_len))
        spans = _tensor_spans(header)
        shapes = {name: header[name]["shape"] for _, _, name in spans}
    except ValueError as err:
        raise ModelFolderError(
            f"{file.name} in {shown} is not a valid safetensors file ({err})", fix=fix
        ) from err
    data_size = size - 8 - header_len
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            problem = "overlaps the tensor before it" if begin < position else "leaves a gap"
            raise ModelFolderError(
                f"{file.name} in {shown} is not a valid safetensors file (tensor {name!r} "
                f"starts at byte {begin} of the data, where {position} was expected: it "
                f"{problem})",
                fix=fix,
            )
        position = end
    if data_size < position:
        raise ModelFolderError(
            f"{file.name} in {shown} is truncated: {size} bytes, its header needs "
            f"{8 + header_len + position}",
            fix=fix,
        )
    if data_size > position:
        raise ModelFolderError(
            f"{file.name} in {shown} is not a valid safetensors file ({data_size - position} "
            f"bytes after the last tensor: the header does not describe the whole file)",
            fix=fix,
        )
    return shapes


def _tensor_spans(header: object) -> list[tuple[int, int, str]]:
    """(begin, end, name) of each tensor the header describes; ValueError naming the problem."""
    if not isinstance(header, dict):
        raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ is not an object of strings")
    spans = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        shown = repr(name) if len(name) <= 60 else repr(name[:57] + "...")
        if not isinstance(meta, dict):
            raise ValueError(f"tensor {shown} is described by a {type(meta).__name__}")
        dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BITS:
            raise ValueError(f"tensor {shown} has unknown dtype {_short(dtype)}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise ValueError(f"tensor {shown} has shape {_short(shape)}, not a list of sizes")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise ValueError(
                f"tensor {shown} has data_offsets {_short(offsets)}, expected [begin, end] "
                "with 0 <= begin <= end"
            )
        begin, end = offsets
        span_bits = 8 * (end - begin)
        # Multiplied out, thousands of huge sizes would take minutes: past the span is enough.
        elements = product_past(shape, span_bits)
        bits = elements * SAFETENSORS_DTYPE_BITS[dtype]
        if bits != span_bits:
            needs = f"more than {end - begin}" if elements > span_bits else f"{bits / 8:g}"
            raise ValueError(
                f"tensor {shown} of shape {_short(shape)} and dtype {dtype} needs {needs} "
                f"bytes, its data_offsets {offsets} span {end - begin}"
            )
        spans.append((begin, end, name))
    return spans


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tokenizer_files(path: Path, shown: str) -> tuple[str, ...]:
    if not any(all((path / name).is_file() for name in group) for group in TOKENIZER_SOURCES):
        looked = ", ".join(" + ".join(group) for group in TOKENIZER_SOURCES)
        raise ModelFolderError(
            f"model folder {shown} has no tokenizer (looked for {looked})",
            fix=f"save it with tokenizer.save_pretrained('{shown}')",
        )
    return tuple(name for name in TOKENIZER_EXTRAS if (path / name).is_file())


def _check_tokenizer_json(file: Path, shown: str) -> None:
    """transformers loads tokenizer.json first when it is there: one it cannot read fails every
    worker at start. The tokenizers library (what transformers reads it with) decides."""
    import tokenizers  # transformers' own dependency; imported only when there is one to read

    try:
        tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # the library raises plain Exception for every reading problem
        raise ModelFolderError(
            f"tokenizer.json in {shown} is not a tokenizer the tokenizers library can read "
            f"({str(err)[:200]})",
            fix=f"save the tokenizer again with tokenizer.save_pretrained('{shown}')",
        ) from err
