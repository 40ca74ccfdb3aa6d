"""`build --runtime onnx` / `onnx-int8`: export the ONNX graph at build time, check it against
PyTorch.

The archive then serves predictions through ONNX Runtime (handlers/onnx_runtime.py) and keeps
the safetensors for explanations. The build refuses an export whose answers are not PyTorch's:
every probability within PROBABILITY_TOLERANCE and every label the same, over the shipped demo
corpus plus texts at the model's longest and shortest. `onnx-int8` quantizes the exported
graph's weights to int8 (approximate): the build measures it as archiver/int8_check.py says.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from scibert_pack.demo.corpus import load_corpus
from scibert_pack.errors import BuildError
from scibert_pack.handlers.first_token import first_token_last_layer
from scibert_pack.handlers.model import Classifier, ModelLoadError, load_pretrained
from scibert_pack.handlers.onnx_runtime import LOGITS, OnnxLoadError, OnnxLogits
from scibert_pack.handlers.settings import HandlerSettings

# "Exact": fp32 ONNX Runtime and PyTorch differ by float rounding only (kernel order, fusions).
PROBABILITY_TOLERANCE = 1e-4
# ONNX opset of the export: 17 has LayerNormalization, which ONNX Runtime fuses.
OPSET = 17
_CHECK_BATCH = 16
Logits = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class RuntimeCheck:
    """How the exported model's answers compare with PyTorch's on the check texts."""

    runtime: str
    texts: int
    label_agreement: float
    max_probability_difference: float
    tolerance: float
    onnx_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "checked_texts": self.texts,
            "label_agreement": self.label_agreement,
            "max_probability_difference": self.max_probability_difference,
            "tolerance": self.tolerance,
            "onnx_bytes": self.onnx_bytes,
            "versions": _versions(),
        }


class _Logits(torch.nn.Module):  # type: ignore[misc]  # torch.nn is untyped here
    """The classifier's forward pass with positional inputs and the logits as its one output."""

    def __init__(self, model: Any, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).logits  # type: ignore[no-any-return]


def export_onnx(model_dir: Path, target: Path, handler: HandlerSettings) -> RuntimeCheck:
    """Write model.onnx of the classifier in `model_dir` to `target`; BuildError if not exact."""
    classifier = _classifier(model_dir, handler)
    _export(classifier, target, model_dir, cut=handler.trim_last_layer)
    onnx = _session(target)
    check = compare(classifier, onnx, check_texts(classifier), target.stat().st_size)
    if check.label_agreement < 1.0 or check.max_probability_difference > check.tolerance:
        raise BuildError(
            f"the ONNX export of {model_dir} does not answer as PyTorch does: labels agree on "
            f"{check.label_agreement:.2%} of {check.texts} check texts, largest probability "
            f"difference {check.max_probability_difference:.2e} (allowed: all labels, "
            f"{check.tolerance:.0e})",
            fix="build with --runtime torch (the default), and report the model type",
        )
    return check


def export_onnx_int8(
    model_dir: Path, target: Path, handler: HandlerSettings, min_agreement: float
) -> dict[str, Any]:
    """Write the int8 graph (fp32 export, then ONNX Runtime's dynamic quantization of its
    weights) to `target`; its runtime_check, or BuildError when it gives fp32 torch's label on
    fewer than `min_agreement` of the held-out texts (archiver/int8_check.py)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from scibert_pack.archiver.int8_check import judge

    classifier = _classifier(model_dir, handler)
    fp32 = target.with_name(target.name + ".fp32")
    try:
        _export(classifier, fp32, model_dir, cut=handler.trim_last_layer)
        try:
            with _root_logger_untouched():
                # A scale per output channel: on the demo classifier the largest probability
                # difference from fp32 fell from 0.20 (per tensor) to 0.03, at ~2% of speed.
                quantize_dynamic(
                    str(fp32), str(target), per_channel=True, weight_type=QuantType.QInt8
                )
        except Exception as err:  # onnxruntime.quantization raises untyped errors
            raise BuildError(
                f"quantizing the ONNX export of {model_dir} to int8 failed: {err}",
                fix="build with --runtime onnx (exact) or torch-int8",
            ) from err
    finally:
        fp32.unlink(missing_ok=True)
    texts = [example.text for example in load_corpus().held_out]
    share, worst = agreement(classifier, _session(target), texts)
    check = judge("onnx-int8", model_dir, share, worst, len(texts), min_agreement)
    return {**check, "onnx_bytes": target.stat().st_size, "versions": _versions()}


@contextlib.contextmanager
def _root_logger_untouched() -> Iterator[None]:
    """onnxruntime.quantization warns through logging.warning(), which configures the root
    logger (basicConfig to stderr) when nothing has; a library must not. A NullHandler on an
    unconfigured root meanwhile leaves it as the application had it."""
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard is not None:
            root.removeHandler(guard)


def _classifier(model_dir: Path, handler: HandlerSettings) -> Classifier:
    try:
        model, tokenizer = load_pretrained(model_dir, allow_pickle=handler.allow_pickle)
    except ModelLoadError as err:
        raise BuildError(str(err), fix="build from a folder save_pretrained wrote") from err
    return Classifier.create(model, tokenizer, handler, torch.device("cpu"))


def _export(classifier: Classifier, target: Path, model_dir: Path, *, cut: bool) -> None:
    """With `cut`, the graph's last layer finishes for the first token only (as the torch
    runtime's, handlers/first_token.py); `classifier` stays whole, the reference it is checked
    against."""
    sample = classifier.tokenize(["a short text", "a somewhat longer text that pads the first"])
    names = list(sample.inputs)
    axes = {name: {0: "texts", 1: "tokens"} for name in names}
    # eval() first: the exporter puts the module back in the mode it found it in, and a new
    # Module is in training mode (dropout on) - which would leave the checked torch model there.
    wrapper = _Logits(classifier.model, names).eval()
    handle = first_token_last_layer(classifier.model) if cut else None
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                tuple(sample.inputs[name] for name in names),
                str(target),
                input_names=names,
                output_names=[LOGITS],
                dynamic_axes={**axes, LOGITS: {0: "texts"}},
                opset_version=OPSET,
                # The TorchScript exporter: the dynamo one needs onnxscript and more.
                dynamo=False,
            )
    except Exception as err:  # the exporter raises many unrelated types
        raise BuildError(
            f"exporting {model_dir} to ONNX failed: {err}",
            fix="build with --runtime torch (the default), which needs no export",
        ) from err
    finally:
        if handle is not None:
            handle.remove()


def _session(target: Path) -> OnnxLogits:
    try:
        return OnnxLogits.load(target, torch.get_num_threads())
    except OnnxLoadError as err:
        raise BuildError(str(err), fix="pip install onnxruntime, or --runtime torch") from err


def check_texts(classifier: Classifier) -> list[str]:
    """The demo corpus, plus one text past the model's longest input and one of a single word."""
    corpus = load_corpus()
    texts = [example.text for example in (*corpus.train, *corpus.held_out)]
    return [*texts, " ".join(texts)[: classifier.max_length * 16], "x"]


def agreement(classifier: Classifier, logits: Logits, texts: Sequence[str]) -> tuple[float, float]:
    """Share of `texts` whose label `logits` gives as torch does, and the largest probability
    difference between the two."""
    agree, worst = 0, 0.0
    for start in range(0, len(texts), _CHECK_BATCH):
        batch = classifier.tokenize(texts[start : start + _CHECK_BATCH])
        expected = classifier.probabilities(batch.inputs)
        with torch.inference_mode():
            got = torch.softmax(logits(batch.inputs).float(), dim=-1)
        agree += int((expected.argmax(dim=-1) == got.argmax(dim=-1)).sum())
        worst = max(worst, float((expected - got).abs().max()))
    return agree / len(texts), worst


def compare(
    classifier: Classifier, onnx: OnnxLogits, texts: Sequence[str], onnx_bytes: int
) -> RuntimeCheck:
    share, worst = agreement(classifier, onnx, texts)
    return RuntimeCheck(
        runtime="onnx",
        texts=len(texts),
        label_agreement=share,
        max_probability_difference=worst,
        tolerance=PROBABILITY_TOLERANCE,
        onnx_bytes=onnx_bytes,
    )


def _versions() -> dict[str, str]:
    return {dist: _version(dist) for dist in ("onnxruntime", "onnx")}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
