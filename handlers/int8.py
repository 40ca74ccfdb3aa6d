"""Predictions through PyTorch dynamic int8 quantization, for `build --runtime torch-int8`.

The worker quantizes the Linear layers of a copy of the fp32 model when it loads (the same
deterministic step the build ran to measure its agreement with fp32); explanations keep the fp32
model, because Captum needs gradients, and their answers say so (`explained_with`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch

EXPLAINED_WITH = "torch-fp32"


def int8_model(model: Any) -> Any:
    """An int8 copy of `model`: Linear weights int8 with a scale per output channel,
    activations quantized per batch.

    Per channel, not per tensor: on the demo classifier (MiniLM-L6) the largest probability
    difference from fp32 on the held-out texts fell from 0.22 to 0.07, for ~4% of speed
    (BENCHMARKS.md, "Prediction backends").
    """
    linear = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
    return torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model).cpu(), linear, dtype=torch.qint8
    )


def int8_logits(model: Any) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """Logits from int8_model(model)."""
    quantized = int8_model(model)

    def logits(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        cpu = {key: value.cpu() for key, value in inputs.items()}
        return quantized(**cpu).logits  # type: ignore[no-any-return]

    return logits
