"""Predictions through ONNX Runtime, for archives built with `build --runtime onnx` or `onnx-int8`.

The archive then holds model.onnx (exported at build time and checked against PyTorch there)
next to the safetensors: ONNX Runtime computes the logits of predictions, torch still loads the
safetensors for explanations (Captum needs gradients), so both come from the same fp32 weights.
onnxruntime is imported only here, only when the archive asks for it: plain archives keep
running on workers without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .model import ModelLoadError

ONNX_FILE = "model.onnx"
# `--runtime onnx-int8`: the graph with int8 weights (quantize_dynamic at build time). Another
# name than the fp32 graph's, so an archive says by its files which one it predicts with.
ONNX_INT8_FILE = "model.int8.onnx"
LOGITS = "logits"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Explanations of an onnx-int8 archive come from the fp32 torch weights, not the int8 graph.
INT8_EXPLAINED_WITH = "torch-fp32"


def onnx_file(runtime: str) -> str:
    """The archive's ONNX graph for `runtime`."""
    return ONNX_INT8_FILE if runtime == "onnx-int8" else ONNX_FILE


def choose_providers(
    available: Sequence[str], device: str, gpu_id: object, *, int8: bool = False
) -> list[Any]:
    """ONNX Runtime execution providers, best first: CUDA on the GPU TorchServe gave the worker
    when this onnxruntime has it and the settings allow it, else the CPU. int8 graphs stay on the
    CPU: their dynamic quantization operators are CPU kernels (on CUDA most nodes fall back)."""
    wants_gpu = device in ("auto", "cuda") and gpu_id is not None and not int8
    if wants_gpu and CUDA in available:
        return [(CUDA, {"device_id": int(str(gpu_id))}), CPU]
    return [CPU]


class OnnxLoadError(ModelLoadError):
    """The ONNX model cannot be served; the message names the file and the fix."""


class OnnxLogits:
    """Logits of a batch of model inputs from an ONNX Runtime session."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_names = tuple(str(i.name) for i in session.get_inputs())

    @classmethod
    def load(
        cls, path: Path, threads: int, *, device: str = "cpu", gpu_id: object = None
    ) -> OnnxLogits:
        """A session over `path` with the worker's `threads`, on the GPU when choose_providers
        picks it."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise OnnxLoadError(
                f"this archive was built with an ONNX runtime but the worker cannot import "
                f"onnxruntime ({exc}); install it in the serving image (pip install onnxruntime, "
                "the version the build report names) or rebuild with --runtime torch"
            ) from exc
        int8 = path.name == ONNX_INT8_FILE
        if not path.is_file():
            runtime = "onnx-int8" if int8 else "onnx"
            raise OnnxLoadError(
                f"this archive was built with --runtime {runtime} but has no {path.name} in "
                f"{path.parent}; rebuild it with scibert-pack build --runtime {runtime}"
            )
        options = ort.SessionOptions()
        # The worker's share of the CPUs, as torch gets (threads.py); one inter-op thread, as
        # a BERT graph is a chain.
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ORT fuses attention, LayerNorm + residual and bias + GELU when it loads the graph:
        # an offline fusion (onnxruntime.transformers.optimizer) measured no faster (BENCHMARKS.md).
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            providers = choose_providers(ort.get_available_providers(), device, gpu_id, int8=int8)
            session = ort.InferenceSession(str(path), options, providers=providers)
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
