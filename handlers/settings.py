"""Handler settings: the `handler:` section of the archive's model-config.yaml.

Runs inside the TorchServe worker, so: standard library only, and relative imports only (the
package is installed as `scibert_pack.handlers` and shipped inside archives under another name).
`scibert-pack build` writes these settings; the handler reads them back with `from_mapping`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")


class SettingsError(ValueError):
    """A handler setting has a bad value; the message names the key, the value and the range."""


@dataclass(frozen=True)
class HandlerSettings:
    # Truncation cap in tokens; the handler also caps it at the model's own maximum.
    max_length: int = 512
    # Integrated-gradients steps when a request names none, and the most a request may ask for.
    explain_steps: int = 50
    max_explain_steps: int = 500
    # Captum's internal_batch_size: rows per forward pass inside one explanation.
    internal_batch_size: int = 64
    # Merge word pieces ("bio", "##avail") into words in explanations by default.
    merge_subwords: bool = False
    # Server-side limits: a request over them fails alone with a 4xx naming the limit.
    max_texts_per_request: int = 256
    max_text_chars: int = 100_000
    # Explaining costs n_steps forward passes per text: a tighter cap keeps one explain request
    # well inside the response timeout (16 texts x 500 steps on a SciBERT-sized model is minutes).
    max_explain_texts: int = 16
    # Load pickle weights (pytorch_model.bin) when no safetensors exist: `build --allow-pickle`.
    allow_pickle: bool = False
    # 0 leaves torch's own default (one thread per core).
    torch_threads: int = 0
    device: Device = "auto"

    def __post_init__(self) -> None:
        _check_range("max_length", self.max_length, 8, 8192)
        _check_range("explain_steps", self.explain_steps, 1, self.max_explain_steps)
        _check_range("max_explain_steps", self.max_explain_steps, 1, 10_000)
        _check_range("internal_batch_size", self.internal_batch_size, 1, 4096)
        _check_range("max_texts_per_request", self.max_texts_per_request, 1, 100_000)
        _check_range("max_text_chars", self.max_text_chars, 1, 10_000_000)
        _check_range("max_explain_texts", self.max_explain_texts, 1, 100_000)
        _check_range("torch_threads", self.torch_threads, 0, 1024)
        if not isinstance(self.allow_pickle, bool):
            raise SettingsError(f"allow_pickle must be true or false, got {self.allow_pickle!r}")
        if not isinstance(self.merge_subwords, bool):
            got = self.merge_subwords
            raise SettingsError(f"merge_subwords must be true or false, got {got!r}")
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")

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


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
