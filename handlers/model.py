"""Load a BERT-family sequence classifier, tokenize a batch once, predict in one forward pass."""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .settings import OFFSET_POSITION_TYPES, HandlerSettings, usable_positions

# Tokenizer outputs that are for the handler, never for model.forward.
_NOT_MODEL_INPUTS = frozenset({"offset_mapping", "overflowing_tokens", "length"})
# Past this, tokenizer.model_max_length is transformers' "no limit" sentinel.
_UNSET_MAX_LENGTH = 1_000_000
# A generous bound on characters per token: BERT-family WordPiece/BPE vocabularies average 3 to 6
# characters per token on English and scientific text, and about one on CJK. Each text is cut to
# max_length x this before it is tokenized, so a 100,000-character text costs the tokenizer what
# a few thousand do (it would otherwise tokenize every character, and keep the overflow, for the
# max_length tokens the model reads). The bound is not trusted for correctness: a cut is kept only
# when the tokens the model reads all come from words the cut left whole, and a text with longer
# tokens (whitespace runs, one giant word) is cut at twice the length, and so on.
CHARS_PER_TOKEN_BOUND = 16
# Baseline rows whose class probabilities a classifier keeps (RowMemo): a baseline depends on the
# text's length and layout only, so a few hundred cover the lengths a server sees.
BASELINE_MEMO_ROWS = 256


class ModelLoadError(RuntimeError):
    """The model folder cannot be served; the message names the folder and the fix."""


@dataclass(frozen=True)
class Batch:
    """One tokenization of many texts (dynamic padding to the longest) and what it dropped."""

    inputs: dict[str, torch.Tensor]
    truncated: tuple[bool, ...]
    # Per text: the tokenizer's word index of every token (None for special tokens), if known.
    word_ids: tuple[tuple[int | None, ...], ...] | None
    offsets: tuple[tuple[tuple[int, int], ...], ...] | None

    @property
    def size(self) -> int:
        return len(self.truncated)

    @property
    def lengths(self) -> tuple[int, ...]:
        """Real (unpadded) tokens of every text."""
        return tuple(int(n) for n in self.inputs["attention_mask"].sum(dim=1).tolist())

    def rows(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Model inputs of some texts, with padding columns none of them use cut off."""
        picked = torch.as_tensor(list(indices), dtype=torch.long)
        used = self.inputs["attention_mask"][picked].any(dim=0).nonzero()
        width = int(used.max()) + 1
        return {key: value[picked, :width] for key, value in self.inputs.items()}


class RowMemo:
    """Class probabilities the model gave for input rows it will see again (explanation
    baselines), by the row's inputs; the least recently used go first."""

    def __init__(self, capacity: int = BASELINE_MEMO_ROWS) -> None:
        self.capacity = capacity
        self._rows: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(row: Sequence[torch.Tensor]) -> bytes:
        """One input row (its ids, then its other inputs, all of one width) as a key."""
        return bytes(torch.cat([t.reshape(-1) for t in row]).to(torch.long).cpu().numpy().tobytes())

    def get(self, key: bytes) -> torch.Tensor | None:
        value = self._rows.get(key)
        if value is not None:
            self._rows.move_to_end(key)
        return value

    def put(self, key: bytes, probabilities: torch.Tensor) -> None:
        self._rows[key] = probabilities
        self._rows.move_to_end(key)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)


@dataclass(frozen=True)
class Classifier:
    model: Any
    tokenizer: Any
    device: torch.device
    labels: tuple[str, ...]
    max_length: int
    model_input_names: frozenset[str]
    # Logits of predictions from another runtime (onnx_runtime.OnnxLogits) than `model`, which
    # then serves explanations only; None: `model` does both.
    fast_logits: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None = None
    # The explaining model's f(baseline) rows (explain.py), shared by copies of this classifier.
    baselines: RowMemo = field(default_factory=RowMemo, compare=False, repr=False)

    @classmethod
    def create(
        cls, model: Any, tokenizer: Any, settings: HandlerSettings, device: torch.device
    ) -> Classifier:
        """Wrap an already loaded model (the seam tests use) for serving on `device`."""
        model.to(device)
        model.eval()
        # Integrated gradients needs gradients of the embedding output only.
        model.requires_grad_(False)
        # Explanations and word alignment read real tokens as a prefix of each padded row.
        tokenizer.padding_side = "right"
        config = model.config
        labels = tuple(str(config.id2label[i]) for i in range(config.num_labels))
        accepted = frozenset(inspect.signature(model.forward).parameters)
        return cls(
            model=model,
            tokenizer=tokenizer,
            device=device,
            labels=labels,
            max_length=min(settings.max_length, model_max_tokens(model, tokenizer)),
            model_input_names=accepted,
        )

    def tokenize(self, texts: Sequence[str]) -> Batch:
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        # Slow tokenizers give no word ids to check a cut with: they read whole texts.
        pieces = [self._cut(text) for text in texts] if fast else list(texts)
        encoding = self.tokenizer(
            pieces,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_offsets_mapping=fast,
        )
        inputs = {
            key: value.to(self.device)
            for key, value in encoding.items()
            if key not in _NOT_MODEL_INPUTS and key in self.model_input_names
        }
        if not fast:
            return Batch(inputs, _truncated_slow(self, texts), None, None)
        encodings = encoding.encodings
        cut = [len(piece) < len(text) for piece, text in zip(pieces, texts, strict=True)]
        return Batch(
            inputs=inputs,
            truncated=tuple(bool(e.overflowing) or c for e, c in zip(encodings, cut, strict=True)),
            word_ids=tuple(tuple(e.word_ids) for e in encodings),
            offsets=tuple(tuple(tuple(o) for o in e.offsets) for e in encodings),
        )

    def _cut(self, text: str) -> str:
        """`text`, or the start of it that gives the same first max_length tokens.

        A cut may change the tokens of the word it splits, so it is kept only when the tokens
        the model reads all come from words before that one (and more follow: it overflows).
        """
        keep = self.max_length - int(self.tokenizer.num_special_tokens_to_add(pair=False))
        limit = self.max_length * CHARS_PER_TOKEN_BOUND
        while len(text) > limit:
            piece = text[:limit]
            encoded = self.tokenizer(piece, add_special_tokens=False, truncation=False)
            words = [w for w in encoded.word_ids() if w is not None]
            if len(words) > keep > 0 and words[keep - 1] < words[-1]:
                return piece
            limit *= 2
        return text

    def probabilities(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Softmax probabilities, shape (texts, labels), on the CPU."""
        with torch.inference_mode():
            if self.fast_logits is not None:
                logits = self.fast_logits(inputs)
            else:
                logits = self.model(**inputs).logits
        return torch.softmax(logits.float(), dim=-1).cpu()

    def batch_probabilities(self, batch: Batch, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """Probabilities of the texts in `chunks` at their positions in `batch` (the rows of
        texts in no chunk are left unset), one forward pass per chunk."""
        if len(chunks) == 1 and len(chunks[0]) == batch.size:
            return self.probabilities(batch.inputs)
        out = torch.empty(batch.size, len(self.labels))
        for chunk in chunks:
            out[torch.as_tensor(list(chunk), dtype=torch.long)] = self.probabilities(
                batch.rows(chunk)
            )
        return out

    def tokens(self, input_ids: torch.Tensor) -> list[str]:
        return [str(t) for t in self.tokenizer.convert_ids_to_tokens(input_ids.tolist())]


def token_chunks(
    lengths: Sequence[int], max_tokens: int, max_rows: int | None = None
) -> list[tuple[int, ...]]:
    """Text positions grouped so that each group's padded size (texts x longest) <= max_tokens.

    When everything fits, one group in the original order (the usual batch: one pass). Otherwise
    shortest first, so that each group pads to texts of about its own length. A text longer than
    max_tokens forms a group alone; `max_rows` also caps the texts per group.
    """
    rows = len(lengths) if max_rows is None else max(1, max_rows)
    if not lengths:
        return []
    if len(lengths) <= rows and len(lengths) * max(lengths) <= max_tokens:
        return [tuple(range(len(lengths)))]
    groups: list[tuple[int, ...]] = []
    current: list[int] = []
    for pos in sorted(range(len(lengths)), key=lengths.__getitem__):
        full = len(current) == rows or (len(current) + 1) * lengths[pos] > max_tokens
        if current and full:
            groups.append(tuple(current))
            current = []
        current.append(pos)
    groups.append(tuple(current))
    return groups


def position_ids(classifier: Classifier, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Positions of the real tokens, for models that would derive them from the token ids.

    RoBERTa-style models number positions from the non-pad tokens, so a baseline made of pad
    tokens would move to other positions than its input; passing the input's positions keeps
    them the same. Models with plain 0..n positions need nothing (None).
    """
    config = classifier.model.config
    if getattr(config, "model_type", "") not in OFFSET_POSITION_TYPES:
        return None
    if "position_ids" not in classifier.model_input_names:
        return None
    mask = attention_mask.long()
    return torch.cumsum(mask, dim=1) * mask + int(config.pad_token_id)


def _truncated_slow(classifier: Classifier, texts: Sequence[str]) -> tuple[bool, ...]:
    lengths = [len(classifier.tokenizer(t, truncation=False)["input_ids"]) for t in texts]
    return tuple(n > classifier.max_length for n in lengths)


def model_max_tokens(model: Any, tokenizer: Any) -> int:
    """The most tokens the model takes: the tokenizer's limit, else its position embeddings."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _UNSET_MAX_LENGTH:
        return limit
    config = model.config
    return usable_positions(
        str(getattr(config, "model_type", "")),
        int(getattr(config, "max_position_embeddings", 512)),
        int(getattr(config, "pad_token_id", 1) or 0),
    )


def choose_device(settings: HandlerSettings, gpu_id: object) -> torch.device:
    """cuda:{gpu_id} when TorchServe gave the worker a GPU, CUDA works and settings allow it."""
    wants_gpu = settings.device in ("auto", "cuda") and gpu_id is not None
    if wants_gpu and torch.cuda.is_available():
        return torch.device(f"cuda:{int(str(gpu_id))}")
    return torch.device("cpu")


def load_pretrained(model_dir: Path, *, allow_pickle: bool = False) -> tuple[Any, Any]:
    """Model and tokenizer from a saved folder: safetensors, or a .bin only if allowed."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist; check model_dir")
    safetensors = sorted(model_dir.glob("*.safetensors"))
    bins = sorted(model_dir.glob("*.bin"))
    if not safetensors and not bins:
        raise ModelLoadError(
            f"model folder {model_dir} has no weights (looked for *.safetensors, *.bin); "
            "save the model with model.save_pretrained(folder)"
        )
    if not safetensors and not allow_pickle:
        raise ModelLoadError(
            f"model folder {model_dir} holds only pickle weights ({bins[0].name}) and this "
            "archive was not built to load them (unpickling can run code); rebuild from "
            "safetensors weights, or with `scibert-pack build --allow-pickle` if you trust them"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), use_safetensors=bool(safetensors)
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load a sequence classifier from {model_dir}: {exc}; the folder must hold "
            "config.json, the weights and the tokenizer files"
        ) from exc
    return model, tokenizer
