"""Predictions through ONNX Runtime, for archives built with `scibert-pack build --runtime onnx`.

The archive then holds model.onnx (exported at build time and checked against PyTorch there)
next to the safetensors: ONNX Runtime computes the logits of predictions, torch still loads the
safetensors for explanations (Captum needs gradients), so both come from the same fp32 weights.
onnxruntime is imported only here, only when the archive asks for it: plain archives keep
running on workers without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .model import ModelLoadError

ONNX_FILE = "model.onnx"
LOGITS = "logits"


class OnnxLoadError(ModelLoadError):
    """The ONNX model cannot be served; the message names the file and the fix."""


class OnnxLogits:
    """Logits of a batch of model inputs from an ONNX Runtime session on the CPU."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_names = tuple(str(i.name) for i in session.get_inputs())

    @classmethod
    def load(cls, path: Path, threads: int) -> OnnxLogits:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise OnnxLoadError(
                f"this archive was built with --runtime onnx but the worker cannot import "
                f"onnxruntime ({exc}); install it in the serving image (pip install onnxruntime, "
                "the version the build report names) or rebuild with --runtime torch"
            ) from exc
        if not path.is_file():
            raise OnnxLoadError(
                f"this archive was built with --runtime onnx but has no {path.name} in "
                f"{path.parent}; rebuild it with scibert-pack build --runtime onnx"
            )
        options = ort.SessionOptions()
        # The worker's share of the CPUs, as torch gets (threads.py); one inter-op thread, as
        # a BERT graph is a chain.
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise OnnxLoadError(
                f"onnxruntime cannot load {path} ({exc}); rebuild the archive with the "
                "onnxruntime version the serving image has, or with --runtime torch"
            ) from exc
        return cls(session)

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise OnnxLoadError(
                f"the ONNX model needs input(s) {', '.join(missing)} the tokenizer did not give; "
                "rebuild the archive from the same model folder"
            )
        feed = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        (logits,) = self.session.run([LOGITS], feed)
        return torch.from_numpy(logits)
