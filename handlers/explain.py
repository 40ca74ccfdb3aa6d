"""Integrated-gradients explanations with Captum, many texts in one call.

f(x) is the softmax probability of the target class. The baseline keeps the special tokens
([CLS]/[SEP], <s>/</s>) and the padding of the input and puts the pad token everywhere else, at
the input's positions (RoBERTa would otherwise renumber positions around pad tokens), so
padding contributes exactly 0 and the importances of a text (attributions on the word-embedding
output, summed over the embedding dimension, not normalised) add up to f(x) - f(baseline) up to
the convergence delta Captum reports.

Captum is imported when the first explanation is computed, not with this module: its import
costs about a second of every worker start, and most workers only predict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .model import Batch, Classifier, position_ids, token_chunks


@dataclass(frozen=True)
class Explanation:
    words: list[str]
    importances: list[float]
    delta: float
    target: int


@dataclass(frozen=True)
class ExplainJob:
    """Texts (indices into a Batch) explained together with the same integration settings.

    Each Captum pass (forward and backward) takes at most `internal_batch_size` rows and at most
    `max_tokens` padded tokens (rows x longest text), a lone over-long text excepted.
    """

    indices: tuple[int, ...]
    targets: tuple[int, ...]
    n_steps: int
    internal_batch_size: int
    max_tokens: int


def baseline_ids(classifier: Classifier, input_ids: torch.Tensor) -> torch.Tensor:
    """The input with every token but the sequence markers and the padding set to pad."""
    tokenizer = classifier.tokenizer
    pad_id = tokenizer.pad_token_id
    markers = {
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        pad_id,
    } - {None}
    keep = torch.isin(input_ids, torch.tensor(sorted(markers), device=input_ids.device))
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad_id))


def class_probabilities(
    classifier: Classifier, names: tuple[str, ...]
) -> Callable[..., torch.Tensor]:
    """The forward function Captum integrates; Captum picks the target column of its output."""
    model = classifier.model

    def forward(input_ids: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(names, extra, strict=True))
        positions = position_ids(classifier, inputs["attention_mask"])
        if positions is not None:
            inputs["position_ids"] = positions
        logits = model(input_ids=input_ids, **inputs).logits
        return torch.softmax(logits.float(), dim=-1)

    return forward


def explain(classifier: Classifier, batch: Batch, job: ExplainJob) -> list[Explanation]:
    """One explanation per text of `job`, in its order, in as few Captum calls as fit."""
    every_length = batch.lengths
    lengths = [every_length[i] for i in job.indices]
    results: dict[int, Explanation] = {}
    for group in token_chunks(lengths, job.max_tokens, job.internal_batch_size):
        indices = tuple(job.indices[k] for k in group)
        targets = tuple(job.targets[k] for k in group)
        rows = _rows_per_pass(job, len(group), max(lengths[k] for k in group))
        explained = _integrate(classifier, batch, indices, targets, job.n_steps, rows)
        results.update(zip(group, explained, strict=True))
    return [results[k] for k in range(len(job.indices))]


def _rows_per_pass(job: ExplainJob, texts: int, width: int) -> int:
    """Captum's internal_batch_size for `texts` texts padded to `width` tokens.

    Captum runs (internal_batch_size // texts) steps of every text per pass, and all the texts
    at once when internal_batch_size is smaller than their number, so never go below `texts`.
    """
    return max(texts, min(job.internal_batch_size, job.max_tokens // width))


def _integrate(
    classifier: Classifier,
    batch: Batch,
    indices: tuple[int, ...],
    targets: tuple[int, ...],
    n_steps: int,
    rows_per_pass: int,
) -> list[Explanation]:
    from captum.attr import LayerIntegratedGradients

    inputs = batch.rows(indices)
    input_ids = inputs.pop("input_ids")
    names = tuple(sorted(inputs))
    lig = LayerIntegratedGradients(
        class_probabilities(classifier, names), classifier.model.get_input_embeddings()
    )
    attributions, deltas = lig.attribute(
        inputs=input_ids,
        baselines=baseline_ids(classifier, input_ids),
        additional_forward_args=tuple(inputs[name] for name in names),
        target=torch.tensor(targets, device=input_ids.device),
        n_steps=n_steps,
        internal_batch_size=rows_per_pass,
        return_convergence_delta=True,
    )
    scores = attributions.sum(dim=-1).detach().cpu()
    mask = inputs["attention_mask"].bool().cpu()
    ids = input_ids.cpu()
    return [
        Explanation(
            words=classifier.tokens(ids[row][mask[row]]),
            importances=[float(v) for v in scores[row][mask[row]]],
            delta=float(deltas[row]),
            target=target,
        )
        for row, target in enumerate(targets)
    ]


def merge_subwords(
    explanation: Explanation,
    text: str,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
) -> Explanation:
    """Word pieces of one word ("bio", "##avail" / "Ġbio", "avail") become one word.

    The word's importance is the sum of its pieces' (so the total is unchanged); its text is the
    span of the original text it came from. Special tokens stay as they are.
    """
    words: list[str] = []
    importances: list[float] = []
    previous: int | None = None
    word_start = 0
    pairs = zip(explanation.words, explanation.importances, strict=True)
    for pos, (token, score) in enumerate(pairs):
        word = word_ids[pos]
        if word is not None and word == previous:
            words[-1] = text[word_start : offsets[pos][1]].strip()
            importances[-1] += score
        else:
            word_start = offsets[pos][0]
            words.append(token if word is None else text[word_start : offsets[pos][1]].strip())
            importances.append(score)
        previous = word
    return Explanation(words, importances, explanation.delta, explanation.target)
