"""The last encoder layer computes the rest of its work for the first token only.

A BERT-family sequence classifier reads one position of the last layer's output: the first
token ([CLS] or <s>). Every step of a layer after its self-attention (the attention's output
projection, the feed-forward network, the layer norms) works on each token alone, so in the
last layer those steps are computed for the first token only: three quarters of that layer's
work, about 1/L of an L-layer model (MiniLM-L6 ~12%, bert-base ~6%), in predictions and in
explanations (forward and backward) alike. The same arithmetic on the same rows: answers equal
to fp32 rounding. Earlier layers still compute every token: the last layer's attention reads
them all.

Only the architectures listed, loaded through transformers' own classes, whose sequence
classification heads read the first position; any other model is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Cut:
    """Where a model type's last layer turns per-token: `layers` (the encoder's layer list,
    from the base model) and `module` (inside the last layer) whose tensor inputs are cut."""

    layers: str
    module: str


_BERT_LIKE = Cut(layers="encoder.layer", module="attention.output")
CUTS: dict[str, Cut] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    # DistilBERT adds the attention's output to its input inside the layer; its layer norm is
    # the first step with both.
    "distilbert": Cut(layers="transformer.layer", module="sa_layer_norm"),
}


def _first_token(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: (texts, tokens, features) inputs cut to the first token."""
    return tuple(a[:, :1] if isinstance(a, torch.Tensor) and a.dim() == 3 else a for a in args)


def cut_module(model: Any) -> torch.nn.Module | None:
    """The module of `model`'s last layer from which on only the first token is needed, or
    None when `model` is not one this knows to read the first token only."""
    config = getattr(model, "config", None)
    cut = CUTS.get(str(getattr(config, "model_type", "")))
    cls = type(model)
    ours = cls.__module__.startswith("transformers.models.")
    if cut is None or not ours or not cls.__name__.endswith("ForSequenceClassification"):
        return None
    # A feed-forward computed in chunks of tokens takes only multiples of its chunk.
    if getattr(config, "chunk_size_feed_forward", 0):
        return None
    try:
        layers = model.base_model.get_submodule(cut.layers)
        if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
            return None
        module: torch.nn.Module = layers[-1].get_submodule(cut.module)
    except AttributeError:  # a layout this transformers version does not have
        return None
    return module


def first_token_last_layer(model: Any) -> torch.utils.hooks.RemovableHandle | None:
    """Make `model`'s last layer finish for the first token only (see the module's doc); the
    handle undoes it. None: `model` is left as it is."""
    module = cut_module(model)
    if module is None:
        return None
    return module.register_forward_pre_hook(_first_token)
