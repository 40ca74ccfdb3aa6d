"""Handler settings: the `handler:` section of the archive's model-config.yaml.

Runs inside the TorchServe worker, so: standard library only, and relative imports only (the
package is installed as `scibert_pack.handlers` and shipped inside archives under another name).
`scibert-pack build` writes these settings; the handler reads them back with `from_mapping`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
# What computes predictions: torch (eager), or ONNX Runtime over the model.onnx the build
# exported and checked against torch (explanations run on torch, the same fp32 weights), or an
# int8 copy of the torch model (approximate: explanations stay fp32 and their answers say so).
Runtime = Literal["torch", "onnx", "torch-int8"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "torch-int8")
# Peak memory per token of a pass with gradients (explanations) over one without, rounded up
# (BENCHMARKS.md, "Figures behind default settings").
EXPLAIN_MEMORY_FACTOR = 4
# Every integer setting's range, inclusive: the one declaration HandlerSettings checks and
# `scibert-pack build` quotes in its messages. explain_steps runs from 1 to max_explain_steps;
# build also caps max_length at the model's own maximum.
RANGES: dict[str, tuple[int, int]] = {
    "max_length": (8, 8192),
    "max_explain_steps": (1, 10_000),
    "internal_batch_size": (1, 4096),
    "max_texts_per_request": (1, 100_000),
    "max_text_chars": (1, 10_000_000),
    "max_explain_texts": (1, 100_000),
    "max_explain_work": (1, 10_000_000),
    "max_batch_tokens": (64, 100_000_000),
    "torch_threads": (0, 1024),
}
# An explanation's tolerance: the |convergence delta| (f is a class probability, so an absolute
# error in [0, 1]) the tolerance mode stops at. Below 1e-6 float32 noise decides; above 0.1 the
# importances mean little. The setting's 0 turns the mode off.
TOLERANCE_RANGE: tuple[float, float] = (1e-6, 0.1)
DEFAULT_TOLERANCE = 1e-3
# The tolerance mode's first rung of integration steps; each next rung doubles it, up to the
# request's cap (max_explain_steps, max_explain_work) and the time budget.
LADDER_START = 8
# These families count positions from pad_token_id + 1 (see RobertaEmbeddings).
OFFSET_POSITION_TYPES = frozenset({"roberta", "xlm-roberta", "camembert", "longformer"})


class SettingsError(ValueError):
    """A handler setting has a bad value; the message names the key, the value and the range."""


@dataclass(frozen=True)
class HandlerSettings:
    # Truncation cap in tokens; the handler also caps it at the model's own maximum.
    max_length: int = 512
    # Integrated-gradients steps when a request names none, and the most a request may ask for.
    explain_steps: int = 50
    max_explain_steps: int = 500
    # A request without n_steps (and without its own tolerance) gets the fewest steps whose
    # |convergence delta| is at most this (handlers/explain.py, explain_to_tolerance); 0: it
    # gets explain_steps instead (BENCHMARKS.md, "Explain").
    explain_tolerance: float = DEFAULT_TOLERANCE
    # Captum's internal_batch_size: rows per forward pass inside one explanation (fewer when
    # rows x padded width would exceed max_explain_tokens).
    internal_batch_size: int = 64
    # Explanations in the words of the text as written (granularity "words") unless a request
    # asks for "pieces"; False: the tokenizer's pieces ("bio", "##avail") by default.
    merge_subwords: bool = True
    # Server-side limits: a request over them fails alone with a 4xx naming the limit.
    max_texts_per_request: int = 256
    max_text_chars: int = 100_000
    # Explaining costs n_steps forward passes per text: a tighter cap keeps one explain request
    # well inside the response timeout (BENCHMARKS.md, "Figures behind default settings").
    max_explain_texts: int = 16
    # Work of one explain request: texts x n_steps (every step of every text is one row through
    # the model, forward and backward). 1000 lets the default 16 texts x 50 steps through and
    # refuses 16 texts x 500 steps, which on a SciBERT-sized model on a small CPU outlasts the
    # response timeout: TorchServe would kill the worker, failing its whole batch.
    # The cost also grows with the texts' length, which this count does not see.
    max_explain_work: int = 1000
    # Padded tokens (texts x longest text) per forward pass; a batch over it runs as several
    # passes, so memory stays bounded whatever batchSize x max_texts_per_request x max_length
    # allows (8 x 256 texts x 512 tokens = 1M padded tokens in one pass). 16384 (32 texts of 512
    # tokens, 256 of 64) keeps ordinary batches in one pass at a modest peak (memory per padded
    # token: BENCHMARKS.md, "Figures behind default settings"). A text longer than the budget
    # runs alone. Explanation passes get a quarter of it (EXPLAIN_MEMORY_FACTOR).
    max_batch_tokens: int = 16384
    # Load pickle weights (pytorch_model.bin) when no safetensors exist: `build --allow-pickle`.
    allow_pickle: bool = False
    # 0: this worker's share of the CPUs it may use (affinity and cgroup CPU limit, divided by
    # the archive's minWorkers; see threads.py), not torch's one thread per core of the node.
    torch_threads: int = 0
    # torch_threads 0 only: a lone explanation borrows idle sibling workers' CPUs (threads.py,
    # CoreShare). Off by default: on a busy 2-core machine it cost predict throughput under
    # load (BENCHMARKS.md, "Explain").
    lend_idle_cpus: bool = False
    device: Device = "auto"
    runtime: Runtime = "torch"

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            _check_range(name, getattr(self, name), low, high)
        _check_range("explain_steps", self.explain_steps, 1, self.max_explain_steps)
        check_tolerance("explain_tolerance", self.explain_tolerance, allow_zero=True)
        if not isinstance(self.allow_pickle, bool):
            raise SettingsError(f"allow_pickle must be true or false, got {self.allow_pickle!r}")
        if not isinstance(self.lend_idle_cpus, bool):
            got = self.lend_idle_cpus
            raise SettingsError(f"lend_idle_cpus must be true or false, got {got!r}")
        if not isinstance(self.merge_subwords, bool):
            got = self.merge_subwords
            raise SettingsError(f"merge_subwords must be true or false, got {got!r}")
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.runtime not in RUNTIMES:
            got = self.runtime
            raise SettingsError(f"runtime must be one of {', '.join(RUNTIMES)}, got {got!r}")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> HandlerSettings:
        """Settings from a model-config.yaml `handler:` section; unknown keys are an error."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise SettingsError(
                f"unknown handler setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**section)

    def to_mapping(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def max_explain_tokens(self) -> int:
        """Padded tokens per explanation pass (forward and backward): a quarter of a plain pass."""
        return max(1, self.max_batch_tokens // EXPLAIN_MEMORY_FACTOR)


def usable_positions(model_type: str, max_position_embeddings: int, pad_token_id: int) -> int:
    """Tokens a model reads: RoBERTa-style position tables keep pad_token_id + 1 rows unused."""
    if model_type in OFFSET_POSITION_TYPES:
        return max_position_embeddings - (pad_token_id + 1)
    return max_position_embeddings


def tolerance_problem(value: object, *, allow_zero: bool = False) -> str | None:
    """What a usable tolerance must be, when `value` is not one (None when it is)."""
    low, high = TOLERANCE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    if (allow_zero and value == 0) or low <= value <= high:
        return None
    off = " (or 0 to turn the tolerance mode off)" if allow_zero else ""
    return f"must be between {low:g} and {high:g}{off}"


def check_tolerance(name: str, value: object, *, allow_zero: bool = False) -> None:
    problem = tolerance_problem(value, allow_zero=allow_zero)
    if problem is not None:
        raise SettingsError(f"{name} {problem}, got {value!r}")


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
