"""Handler settings: the `handler:` section of the archive's model-config.yaml.

Runs inside the TorchServe worker, so: standard library only, and relative imports only (the
package is installed as `scibert_pack.handlers` and shipped inside archives under another name).
`scibert-pack build` writes these settings; the handler reads them back with `from_mapping`.

Also home of `setting`, the one declaration of a setting (name, default, range, help, option
spelling) that every settings dataclass of scibert-pack is made of: it must live where the
worker can import it, and the rest of the library may import from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
# What computes predictions: torch (eager), or ONNX Runtime over the model.onnx the build
# exported and checked against torch (explanations run on torch, the same fp32 weights), or an
# int8 copy of the torch model, or ONNX Runtime over an int8 model.onnx quantized at build time
# (both approximate: explanations stay fp32 and their answers say so).
Runtime = Literal["torch", "onnx", "torch-int8", "onnx-int8"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "torch-int8", "onnx-int8")
# Peak memory per token of a pass with gradients (explanations) over one without, rounded up
# (BENCHMARKS.md, "Figures behind default settings").
EXPLAIN_MEMORY_FACTOR = 4
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


@dataclass(frozen=True)
class Declared:
    """What a settings field declares (a field made by `setting`): its default, help text,
    range, and the command-line option that sets it. Validation (`check_declared`), the click
    options (scibert_pack/cli/_options.py) and the messages (`option_problem`) all read it."""

    default: object
    help: str
    # Inclusive bounds (whole numbers for an int setting); `high` may name another setting
    # whose value is the upper end.
    low: float | None = None
    high: float | str | None = None
    choices: tuple[str, ...] = ()
    # The option's spelling ("" for --name-with-dashes) and hidden old spellings.
    option: str = ""
    old: tuple[str, ...] = ()
    # A bool with --no-... to turn it off (one that is off by default is a plain flag).
    negatable: bool = False
    # What the value means, for messages: "the most steps a request may ask for".
    meaning: str = ""
    # A value outside [low, high] that turns the setting off (0 for a tolerance).
    off: float | None = None


_DECLARED = "scibert_pack.setting"


def setting(
    default: T,
    help: str,
    *,
    low: float | None = None,
    high: float | str | None = None,
    choices: tuple[str, ...] = (),
    option: str = "",
    old: tuple[str, ...] = (),
    negatable: bool = False,
    meaning: str = "",
    off: float | None = None,
) -> T:
    """A dataclass field with its declaration: `batch_size: int = setting(8, "...", low=1)`."""
    declared = Declared(default, help, low, high, choices, option, old, negatable, meaning, off)
    return field(default=default, metadata={_DECLARED: declared})


def required_setting(help: str, *, option: str = "", old: tuple[str, ...] = ()) -> Any:
    """A dataclass field without a default, with its declaration."""
    declared = Declared(dataclasses.MISSING, help, option=option, old=old)
    return field(metadata={_DECLARED: declared})


def declarations(cls: type) -> dict[str, Declared]:
    """Every declared setting of a settings dataclass, in field order."""
    return {f.name: f.metadata[_DECLARED] for f in fields(cls) if _DECLARED in f.metadata}


def option_of(key: str, declared: Declared) -> str:
    """The option that sets a setting: its declared spelling, else --name-with-dashes."""
    return declared.option or "--" + key.replace("_", "-")


class SettingsError(ValueError):
    """A setting has a bad value. The message names the model-config.yaml key (what the worker
    reads); the fields say the same for callers that name the setting their own way."""

    def __init__(
        self,
        message: str,
        *,
        key: str = "",
        value: object = None,
        low: float | None = None,
        high: float | None = None,
        bound_by: str | None = None,
        choices: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.key = key
        self.value = value
        self.low = low
        self.high = high
        self.bound_by = bound_by  # the setting whose value is `high`
        self.choices = choices


@dataclass(frozen=True)
class HandlerSettings:
    # Truncation cap in tokens; the handler also caps it at the model's own maximum.
    max_length: int = setting(512, "Truncate texts to this many tokens.", low=8, high=8192)
    # Integrated-gradients steps when a request names none, and the most a request may ask for.
    explain_steps: int = setting(
        50,
        "Integrated-gradients steps of an explanation whose request names none.",
        low=1,
        high="max_explain_steps",
        meaning="the steps an explanation takes when a request names none",
    )
    max_explain_steps: int = setting(
        500,
        "Most integrated-gradients steps one explain request may ask for.",
        low=1,
        high=10_000,
        meaning="the most steps a request may ask for",
    )
    # A request without n_steps (and without its own tolerance) gets the fewest steps whose
    # |convergence delta| is at most this (handlers/explain.py, explain_to_tolerance); 0: it
    # gets explain_steps instead (BENCHMARKS.md, "Explain").
    explain_tolerance: float = setting(
        DEFAULT_TOLERANCE,
        "Explain requests without n_steps get the fewest steps (8, 16, 32, ...) whose "
        "|convergence delta| is at most this (a class probability's error); 0: they get "
        "--explain-steps.",
        low=TOLERANCE_RANGE[0],
        high=TOLERANCE_RANGE[1],
        off=0.0,
        meaning="the convergence target of explanations whose request names no n_steps",
    )
    # Captum's internal_batch_size: rows per forward pass inside one explanation (fewer when
    # rows x padded width would exceed max_explain_tokens).
    internal_batch_size: int = setting(
        64, "Rows per forward pass inside one explanation (Captum).", low=1, high=4096
    )
    # Explanations in the words of the text as written (granularity "words") unless a request
    # asks for "pieces"; False: the tokenizer's pieces ("bio", "##avail") by default.
    merge_subwords: bool = setting(
        True, "Merge word pieces into words in explanations.", negatable=True
    )
    # Server-side limits: a request over them fails alone with a 4xx naming the limit.
    max_texts_per_request: int = setting(
        256, "Most texts one request may hold; bigger ones get 413.", low=1, high=100_000
    )
    max_text_chars: int = setting(
        100_000, "Most characters in one text; longer ones get 413.", low=1, high=10_000_000
    )
    # Explaining costs n_steps forward passes per text: a tighter cap keeps one explain request
    # well inside the response timeout (BENCHMARKS.md, "Figures behind default settings").
    max_explain_texts: int = setting(
        16,
        "Most texts one explain request may hold (each costs n_steps forward passes).",
        low=1,
        high=100_000,
    )
    # Work of one explain request: texts x n_steps (every step of every text is one row through
    # the model, forward and backward). 1000 lets the default 16 texts x 50 steps through and
    # refuses 16 texts x 500 steps, which on a SciBERT-sized model on a small CPU outlasts the
    # response timeout: TorchServe would kill the worker, failing its whole batch.
    # The cost also grows with the texts' length, which this count does not see.
    max_explain_work: int = setting(
        1000,
        "Most texts x n_steps one explain request may ask for; bigger ones get 413 "
        "(the default lets 16 texts x 50 steps through).",
        low=1,
        high=10_000_000,
    )
    # Padded tokens (texts x longest text) per forward pass; a batch over it runs as several
    # passes, so memory stays bounded whatever batchSize x max_texts_per_request x max_length
    # allows (8 x 256 texts x 512 tokens = 1M padded tokens in one pass). 16384 (32 texts of 512
    # tokens, 256 of 64) keeps ordinary batches in one pass at a modest peak (memory per padded
    # token: BENCHMARKS.md, "Figures behind default settings"). A text longer than the budget
    # runs alone. Explanation passes get a quarter of it (EXPLAIN_MEMORY_FACTOR).
    max_batch_tokens: int = setting(
        16384,
        "Most padded tokens (texts x longest text) in one forward pass; bigger batches run as "
        "several passes (explanations: a quarter of it). Bounds the worker's memory.",
        low=64,
        high=100_000_000,
    )
    # Load pickle weights (pytorch_model.bin) when no safetensors exist: `build --allow-pickle`.
    allow_pickle: bool = setting(
        False,
        "Accept pytorch_model.bin weights. Pickle files can run code when loaded: trust them.",
    )
    # 0: this worker's share of the CPUs it may use (affinity and cgroup CPU limit, divided by
    # the archive's minWorkers; see threads.py), not torch's one thread per core of the node.
    torch_threads: int = setting(
        0,
        "torch threads per worker; 0: the usable CPUs (cgroup CPU limit included) divided by "
        "--min-workers.",
        low=0,
        high=1024,
    )
    # torch_threads 0 only: a lone explanation borrows idle sibling workers' CPUs (threads.py,
    # CoreShare). Off by default: on a busy 2-core machine it cost predict throughput under
    # load (BENCHMARKS.md, "Explain").
    lend_idle_cpus: bool = setting(
        False,
        "With --torch-threads 0: a lone explanation runs on all usable CPUs while the other "
        "workers are idle (see BENCHMARKS.md, Explain, before turning it on).",
        negatable=True,
    )
    device: Device = setting("auto", "Where the model runs.", choices=DEVICES)
    runtime: Runtime = setting(
        "torch",
        "What computes predictions: torch; onnx (ONNX Runtime over a model.onnx exported and "
        "checked against torch at build time); torch-int8 and onnx-int8 (int8 weights, "
        "approximate, see --min-label-agreement). Explanations always run on the fp32 torch "
        "model. See BENCHMARKS.md.",
        choices=RUNTIMES,
    )

    # The torch runtime on the CPU: bert-base-wide fp32 Linear layers compute with a weight
    # reordered once for oneDNN (packed.py), packed in the background after the worker loads:
    # a lone request ~1.5x faster, more memory (BENCHMARKS.md, "Prepacked Linear weights").
    pack_weights: bool = setting(
        True,
        "With --runtime torch on the CPU: Linear layers at least 768 wide compute with a copy of "
        "their weights reordered once for oneDNN (faster, same answers to fp32 rounding; the "
        "copy adds about 80% of the model's size to each worker's memory).",
        negatable=True,
    )

    # A BERT-family classifier reads the first token of the last layer: that layer finishes for
    # it alone (first_token.py); predictions and explanations ~6% (bert-base) to ~12% (MiniLM-L6)
    # less work (BENCHMARKS.md, "Last layer, first token only").
    trim_last_layer: bool = setting(
        True,
        "The last encoder layer finishes (after its attention) for the first token only, the one "
        "the classification head reads: bert, roberta, xlm-roberta, camembert, electra and "
        "distilbert classifiers; same answers to fp32 rounding.",
        negatable=True,
    )

    def __post_init__(self) -> None:
        check_declared(self)

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> HandlerSettings:
        """Settings from a model-config.yaml `handler:` section; unknown keys are an error."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise SettingsError(
                f"unknown handler setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}",
                key=unknown[0],
                value=section[unknown[0]],
            )
        return cls(**section)

    def to_mapping(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def max_explain_tokens(self) -> int:
        """Padded tokens per explanation pass (forward and backward): a quarter of a plain pass."""
        return max(1, self.max_batch_tokens // EXPLAIN_MEMORY_FACTOR)


def tolerance_problem(value: object) -> str | None:
    """What a request's tolerance must be, when `value` is not one (None when it is)."""
    low, high = TOLERANCE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    if low <= value <= high:
        return None
    return f"must be between {low:g} and {high:g}"


def usable_positions(model_type: str, max_position_embeddings: int, pad_token_id: int) -> int:
    """Tokens a model reads: RoBERTa-style position tables keep pad_token_id + 1 rows unused."""
    if model_type in OFFSET_POSITION_TYPES:
        return max_position_embeddings - (pad_token_id + 1)
    return max_position_embeddings


def check_declared(settings: object) -> None:
    """Check every declared setting of a settings dataclass: fixed ranges first, so a range
    whose upper end is another setting's value is checked against a valid value."""
    declared = declarations(type(settings))
    bound = {k: d for k, d in declared.items() if isinstance(d.high, str)}
    for key, d in declared.items():
        value = getattr(settings, key)
        if d.choices and value not in d.choices:
            raise SettingsError(
                f"{key} must be one of {', '.join(d.choices)}, got {value!r}",
                key=key,
                value=value,
                choices=d.choices,
            )
        if isinstance(d.default, bool) and not isinstance(value, bool):
            raise SettingsError(f"{key} must be true or false, got {value!r}", key=key, value=value)
        if d.off is not None and value == d.off and not isinstance(value, bool):
            continue
        if d.low is not None and key not in bound:
            assert isinstance(d.high, (int, float)), key
            _check_range(key, value, d.low, d.high, whole=not isinstance(d.default, float))
    for key, d in bound.items():
        assert d.low is not None and isinstance(d.high, str), key
        _check_range(key, getattr(settings, key), d.low, getattr(settings, d.high), d.high)


def _check_range(
    key: str,
    value: object,
    low: float,
    high: float,
    bound_by: str | None = None,
    *,
    whole: bool = True,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        problem = f"{key} must be {'an integer' if whole else 'a number'}, got {value!r}"
    elif not low <= value <= high:  # NaN too
        problem = f"{key} must be between {low} and {high}, got {value}"
    else:
        return
    raise SettingsError(problem, key=key, value=value, low=low, high=high, bound_by=bound_by)


def option_problem(
    err: SettingsError, cls: type, *, given: Collection[str] = ()
) -> tuple[str, str]:
    """What a SettingsError of a settings dataclass says to a user of its options: the message
    (option, value, what is allowed) and the fix. `given` names the settings the user set, so a
    conflict between two blames one of those. The library raises them as an InputError."""
    declared = declarations(cls)
    if err.key not in declared:
        return str(err), f"use one of {', '.join(declared)}"
    option = option_of(err.key, declared[err.key])
    if err.choices:
        return (
            f"{option} {err.value!r} is not one of {', '.join(err.choices)}",
            f"pass {option} {' or '.join(err.choices)}",
        )
    if err.low is None or err.high is None:  # a bool: an on/off option
        off = f"--no-{option.removeprefix('--')}"
        fix = f"pass {option} or {off}" if declared[err.key].negatable else f"pass {option} or not"
        return f"{option} {err.value!r} is not true or false", fix
    off_value = declared[err.key].off
    between = f"{option} between {_number(err.low)} and {_number(err.high)}" + (
        f" (or {_number(off_value)} to turn it off)" if off_value is not None else ""
    )
    whole = not isinstance(declared[err.key].default, float)
    if isinstance(err.value, bool) or not isinstance(err.value, int if whole else (int, float)):
        kind = "a whole number" if whole else "a number"
        return f"{option} {err.value!r} is not {kind}", f"pass {between}"
    if err.bound_by is not None and err.value > err.high:
        return _over_bound(err.key, err.value, err.bound_by, err.high, declared, given, between)
    expected = f"{_number(err.low)} to {_number(err.high)}" + (
        f", or {_number(off_value)}" if off_value is not None else ""
    )
    return f"{option} {err.value} is out of range (expected {expected})", f"pass {between}"


def _number(value: float) -> str:
    """1e-06 for a float, 100000000 for a whole number (never 1e+08)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _over_bound(
    key: str,
    value: float,
    bound_key: str,
    bound: float,
    declared: Mapping[str, Declared],
    given: Collection[str],
    between: str,
) -> tuple[str, str]:
    """A setting above the one that caps it (--explain-steps over --max-explain-steps)."""
    option, bound_option = option_of(key, declared[key]), option_of(bound_key, declared[bound_key])
    top = declared[bound_key].high
    raise_bound = f"{bound_option} {value} or more" if isinstance(top, int) and value <= top else ""
    if key not in given and bound_key in given:
        return (
            f"{bound_option} {bound} is below the default {option} {value} "
            f"({declared[key].meaning})",
            f"pass {raise_bound}, or add {between}" if raise_bound else f"add {between}",
        )
    if bound_key not in given:
        problem = (
            f"{option} {value} is more than the default {bound_option} {bound} "
            f"({declared[bound_key].meaning})"
        )
        also = f", or add {raise_bound}" if raise_bound else ""
    else:
        problem = f"{option} {value} is more than {bound_option} {bound}"
        also = f", or {raise_bound}" if raise_bound else ""
    return problem, f"pass {between}{also}"


def _int_ranges(cls: type) -> dict[str, tuple[int, int]]:
    ranges: dict[str, tuple[int, int]] = {}
    for key, d in declarations(cls).items():
        if isinstance(d.low, int) and isinstance(d.high, int) and isinstance(d.default, int):
            ranges[key] = (d.low, d.high)
    return ranges


# Every integer setting's fixed range, inclusive (explain_steps runs from 1 to
# max_explain_steps; build also caps max_length at the model's own maximum).
RANGES: dict[str, tuple[int, int]] = _int_ranges(HandlerSettings)
