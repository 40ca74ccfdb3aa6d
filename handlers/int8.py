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


def int8_logits(model: Any) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """Logits from an int8 copy of `model` (weights int8, activations quantized per batch)."""
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model).cpu(), {torch.nn.Linear}, dtype=torch.qint8
    )

    def logits(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        cpu = {key: value.cpu() for key, value in inputs.items()}
        return quantized(**cpu).logits  # type: ignore[no-any-return]

    return logits
