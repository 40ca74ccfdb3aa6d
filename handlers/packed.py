"""Linear layers whose weights are reordered once for oneDNN, for fp32 models on the CPU.

`F.linear` hands each weight to MKL's sgemm, which copies it into its blocked layout on every
call: a cost that grows with the weight, not the batch, so it weighs most at the few hundred
rows (texts x tokens) a server's pass has. oneDNN's linear (the kernel PyTorch's own compilers
call after freezing) takes a weight reordered once. Measured on a bert-base classifier, one
text per request (BENCHMARKS.md, "Prepacked Linear weights"): 1.05-1.18x per forward pass, same
answers to fp32 rounding. Smaller layers (MiniLM's 384-wide ones) gain nothing, so they stay
as they are, and so does any model that is not fp32 on the CPU.

The packed copy is extra memory (the original weights stay: explanations take gradients
through them), so only layers where it pays are packed, and `build --no-pack-weights` turns
it off. A worker packs after it loads, one layer at a time while it has no batch to answer
(IdlePacker): packing a bert-base takes 0.15-0.3 s, which would otherwise delay the first
answer; a layer computes the same before and after its swap.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Both sides of a weight at least this wide (bert-base's 768): narrower layers measured no gain.
MIN_PACKED_FEATURES = 768
# The rows (texts x tokens) oneDNN chooses the weight's layout for: a served batch's order of
# size. Any row count is computed correctly with it.
PACKED_FOR_ROWS = 128
# How often a packer waiting for an idle worker checks whether the process is exiting.
STOP_POLL_S = 0.05


def packing_available() -> bool:
    """This torch has oneDNN's linear (x86-64 and aarch64 CPU builds do)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.ops.mkldnn._reorder_linear_weight(torch.zeros(2, 2), 1)
        torch.ops.mkldnn._linear_pointwise(torch.zeros(1, 2), probe, None, "none", [], "")
    except (RuntimeError, AttributeError):
        return False
    return True


class _PackedLinearFunction(torch.autograd.Function):  # type: ignore[misc]  # torch is untyped here
    """oneDNN's forward; the backward of the plain layer, from the original weight (the
    gradient of the input only: the classifier's parameters take none)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, bias: Any
    ) -> Any:
        ctx.save_for_backward(weight)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (weight,) = ctx.saved_tensors
        return grad.matmul(weight), None, None, None


class PackedLinear(torch.nn.Linear):  # type: ignore[misc]  # torch is untyped here
    """An nn.Linear (same weight and bias parameters) that computes with a reordered copy of
    its weight while the input is fp32 on the CPU, and like nn.Linear otherwise."""

    packed: torch.Tensor
    packed_version: int

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> PackedLinear:
        layer = cls.__new__(cls)
        torch.nn.Module.__init__(layer)
        layer.in_features = linear.in_features
        layer.out_features = linear.out_features
        layer.weight = linear.weight
        layer.bias = linear.bias
        # Plain attributes: not in state_dict, and .to() leaves them (forward then falls back).
        layer.packed = torch.ops.mkldnn._reorder_linear_weight(
            linear.weight.detach(), PACKED_FOR_ROWS
        )
        # The weight's in-place version when packed: a later change (load_state_dict, an
        # optimizer step) makes the copy stale, and the layer computes from the weight again.
        layer.packed_version = linear.weight._version
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if not self._packed_fits(x):
            return torch.nn.functional.linear(x, weight, bias)
        if torch.is_grad_enabled() and x.requires_grad:
            out: torch.Tensor = _PackedLinearFunction.apply(x, weight, self.packed, bias)
            return out
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")

    def _packed_fits(self, x: torch.Tensor) -> bool:
        """The packed copy is still the weight, and the call is oneDNN's fp32 CPU linear with
        no parameter gradients (those, in training, are nn.Linear's business)."""
        weight, bias = self.weight, self.bias
        return bool(
            x.dtype == weight.dtype == torch.float32
            and x.device.type == weight.device.type == "cpu"
            and weight._version == self.packed_version
            and x.numel() > 0
            and not weight.requires_grad
            and not (bias is not None and bias.requires_grad)
        )


Layer = tuple[torch.nn.Module, str, torch.nn.Linear]


def packable_layers(model: torch.nn.Module, min_features: int = MIN_PACKED_FEATURES) -> list[Layer]:
    """(parent, attribute, layer) of the model's fp32 CPU nn.Linear layers of at least
    min_features a side."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
        and child.weight.dtype == torch.float32
        and child.weight.device.type == "cpu"
        and min(child.in_features, child.out_features) >= min_features
    ]


def pack_linear_layers(model: torch.nn.Module, min_features: int = MIN_PACKED_FEATURES) -> int:
    """Swap the model's packable layers for PackedLinear now; the number swapped (0 when
    oneDNN's linear is unavailable)."""
    layers = packable_layers(model, min_features)
    if not layers or not packing_available():
        return 0
    for parent, name, child in layers:
        setattr(parent, name, PackedLinear.from_linear(child))
    return len(layers)


class IdlePacker(threading.Thread):
    """Packs a model's packable layers in the background, one at a time, each only while
    `idle` is set (the worker clears it while it answers a batch).

    A daemon thread still inside oneDNN when the interpreter exits aborts the whole process
    ("terminate called without an active exception", exit status 134), so at exit the packer
    finishes the layer in hand, stops and is waited for.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        idle: threading.Event,
        min_features: int = MIN_PACKED_FEATURES,
    ) -> None:
        super().__init__(name="scibert-pack-packer", daemon=True)
        self.layers = packable_layers(model, min_features)
        self.idle = idle
        self.packed = 0
        self.stopping = threading.Event()
        # A weak reference: the exit hook must not keep the model alive.
        self._at_exit = functools.partial(_stop_at_exit, weakref.ref(self))

    def start(self) -> None:
        atexit.register(self._at_exit)
        super().start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the layer being packed (the rest stay nn.Linear) and wait for it."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        try:
            self._pack()
        finally:
            # A stopped packer leaves its hook (it then does nothing): stop() may be the exit
            # hook itself, which is not unregistered while atexit runs it.
            if not self.stopping.is_set():
                atexit.unregister(self._at_exit)

    def _pack(self) -> None:
        if not self.layers or not packing_available():
            return
        started = time.perf_counter()
        for parent, name, child in self.layers:
            if not self._wait_until_idle():
                return
            try:
                layer = PackedLinear.from_linear(child)
            except RuntimeError:  # e.g. out of memory: the layers left stay as they are
                logger.warning("packing stopped after %d layers", self.packed, exc_info=True)
                return
            setattr(parent, name, layer)
            self.packed += 1
        logger.info(
            "%d Linear layers compute with prepacked weights (oneDNN; packed in %.2f s while "
            "idle); build --no-pack-weights turns this off",
            self.packed,
            time.perf_counter() - started,
        )

    def _wait_until_idle(self) -> bool:
        """True once the worker is idle, False if the packer is stopping first."""
        while not self.idle.wait(STOP_POLL_S):
            if self.stopping.is_set():
                return False
        return not self.stopping.is_set()


def _stop_at_exit(packer: weakref.ref[IdlePacker]) -> None:
    alive = packer()
    if alive is not None:
        alive.stop()
