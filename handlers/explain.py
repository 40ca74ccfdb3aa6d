"""Integrated-gradients explanations, many texts in one call: the attributions and convergence
delta of Captum's LayerIntegratedGradients on the word-embedding layer, with Captum's quadrature
rules, in fewer passes of the model (tests compare the two).

f(x) is the softmax probability of the target class. The baseline keeps the special tokens
([CLS]/[SEP], <s>/</s>) and the padding of the input and puts the pad token everywhere else, at
the input's positions (RoBERTa would otherwise renumber positions around pad tokens), so
padding contributes exactly 0 and the importances of a text (attributions on the word-embedding
output, summed over the embedding dimension, not normalised) add up to f(x) - f(baseline) up to
the convergence delta (their sum minus f(x) - f(baseline), as Captum defines it).

Each explained text gets two rows for f(x) and f(baseline): they give the delta, the text's
prediction and, when the request named none, its target, so an explained text needs no
prediction pass of its own. For a short text they ride in the integration's first pass, which
costs less than a pass of two rows after an idle spell (weights out of the CPU's cache); many
texts' ends get a pass of their own without gradients (FUSED_ENDS_TOKENS).

Captum is imported when the first explanation is computed, not with this module: its import
costs about a second of every worker start, and most workers only predict.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .model import Batch, Classifier, RowMemo, position_ids, token_chunks

Granularity = Literal["words", "pieces"]
# Captum's integration rules. Explicit n_steps keeps Captum's default (Gauss-Legendre); the
# tolerance mode uses the midpoint rule, which reached |delta| 1e-3 and Pearson r 0.995 against
# 300 steps at 8 steps on both benchmark models, where Gauss-Legendre needs 12 to 16
# (BENCHMARKS.md, "Explain: convergence per step").
Method = Literal["gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left"]
TOLERANCE_METHOD: Method = "riemann_middle"
# A group's f(x) and f(baseline) rows join its first pass (forward and backward) up to this many
# padded tokens; more get a pass of their own without gradients. A pass of few rows costs the
# reading of the weights, which a fused row saves; a fused row costs its backward, which many
# rows do not repay. Served, against a separate pass (BENCHMARKS.md, explain section): fusing
# made one text 1.21x and 1.06x faster (MiniLM, bert-base), eight texts 1.05x and 1.13x slower.
FUSED_ENDS_TOKENS = 64
SLOW_TOKENIZER_NOTE = (
    "word pieces, not words: this model's tokenizer is a slow (Python) tokenizer without "
    "character offsets; save the model with a fast tokenizer (tokenizer.json) for whole words"
)


@dataclass(frozen=True)
class Explanation:
    words: list[str]
    importances: list[float]
    delta: float
    target: int
    granularity: Granularity = "pieces"
    # Why the explanation is not in the granularity asked for, when it is not.
    note: str | None = None
    # Integration steps this explanation used.
    n_steps: int = 0
    # Tolerance mode only: the |delta| asked for, and whether this explanation reached it
    # (False: the ladder ran out of steps or time first; delta says how far it got).
    tolerance: float | None = None
    converged: bool | None = None


@dataclass(frozen=True)
class ExplainJob:
    """Texts (indices into a Batch) explained together with the same integration settings.

    Each pass (forward and backward) takes at most `internal_batch_size` rows and at most
    `max_tokens` padded tokens (rows x longest text), a lone over-long text excepted; a text's
    first pass also holds its two ends, in place of steps. A target of None: the text's
    predicted class, which its first pass computes.
    """

    indices: tuple[int, ...]
    targets: tuple[int | None, ...]
    n_steps: int
    internal_batch_size: int
    max_tokens: int
    method: Method = "gausslegendre"


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
    """The function integrated: class probabilities, one row per input row."""
    model = classifier.model

    def forward(input_ids: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(names, extra, strict=True))
        positions = position_ids(classifier, inputs["attention_mask"])
        if positions is not None:
            inputs["position_ids"] = positions
        logits = model(input_ids=input_ids, **inputs).logits
        return torch.softmax(logits.float(), dim=-1)

    return forward


def explain(
    classifier: Classifier,
    batch: Batch,
    job: ExplainJob,
    endpoints: dict[int, tuple[float, float]] | None = None,
    predicted: dict[int, torch.Tensor] | None = None,
) -> list[Explanation]:
    """One explanation per text of `job`, in its order, in as few passes as fit.

    `endpoints` (text position -> f(baseline), f(x) of its target) is read and filled: a caller
    that explains the same texts again (the ladder) passes the same dict, and their passes hold
    no extra rows. `predicted` (position -> class probabilities at x) is filled for the texts
    whose ends were computed: the prediction of an explained text, without a pass of its own.
    """
    every_length = batch.lengths
    lengths = [every_length[i] for i in job.indices]
    results: dict[int, Explanation] = {}
    for group in token_chunks(lengths, job.max_tokens, job.internal_batch_size):
        indices = tuple(job.indices[k] for k in group)
        targets = tuple(job.targets[k] for k in group)
        rows = _rows_per_pass(job, len(group), max(lengths[k] for k in group))
        explained = _integrate(classifier, batch, indices, targets, job, rows, endpoints, predicted)
        results.update(zip(group, explained, strict=True))
    return [results[k] for k in range(len(job.indices))]


def explain_to_tolerance(
    classifier: Classifier,
    batch: Batch,
    job: ExplainJob,
    tolerance: float,
    caps: Sequence[int],
    may_continue: Callable[[tuple[int, ...], int], bool],
    endpoints: dict[int, tuple[float, float]] | None = None,
    predicted: dict[int, torch.Tensor] | None = None,
) -> list[Explanation]:
    """One explanation per text of `job`, each with the fewest ladder steps whose |delta| is at
    most `tolerance`.

    All texts run at the first rung (job.n_steps); those short of the tolerance run again at the
    next, together, while their own cap (`caps`, per text of the job) allows that many steps and
    `may_continue(indices, steps)` agrees (the time budget). A text that never got there keeps
    its last rung's explanation, marked converged=False. `endpoints` and `predicted` as for
    `explain`: the first rung computes the ends (and picks the targets left None), the later
    rungs reuse them.
    """
    done: dict[int, Explanation] = {}
    endpoints = {} if endpoints is None else endpoints
    pending = list(range(len(job.indices)))
    steps = job.n_steps
    while pending:
        rung = dataclasses.replace(
            job,
            indices=tuple(job.indices[k] for k in pending),
            targets=tuple(done[k].target if k in done else job.targets[k] for k in pending),
            n_steps=steps,
        )
        explained = explain(classifier, batch, rung, endpoints, predicted)
        for k, result in zip(pending, explained, strict=True):
            done[k] = dataclasses.replace(
                result, tolerance=tolerance, converged=abs(result.delta) <= tolerance
            )
        steps *= 2
        pending = [k for k in pending if not done[k].converged and steps <= caps[k]]
        if pending and not may_continue(tuple(job.indices[k] for k in pending), steps):
            pending = []
    return [done[k] for k in range(len(job.indices))]


def _rows_per_pass(job: ExplainJob, texts: int, width: int) -> int:
    """Rows per pass for `texts` texts padded to `width` tokens.

    As Captum's internal_batch_size: (rows // texts) steps of every text per pass, and all the
    texts at once when internal_batch_size is smaller than their number, so never below `texts`.
    """
    return max(texts, min(job.internal_batch_size, job.max_tokens // width))


def _integrate(
    classifier: Classifier,
    batch: Batch,
    indices: tuple[int, ...],
    targets: tuple[int | None, ...],
    job: ExplainJob,
    rows_per_pass: int,
    endpoints: dict[int, tuple[float, float]] | None = None,
    predicted: dict[int, torch.Tensor] | None = None,
) -> list[Explanation]:
    """Integrated gradients on the word-embedding output, the delta from f(baseline) and f(x).

    What Captum's LayerIntegratedGradients computes (its quadrature rules, its path, its sum),
    without its four extra passes of the model (two to read the layer's values at the input
    and the baseline, two for the delta): the layer's values are an embedding lookup, and a
    text's f(x) and f(baseline) are two more rows, of its first pass or of a pass of their own
    (FUSED_ENDS_TOKENS). Those rows are also the text's prediction (`predicted`, position ->
    probabilities) and pick its target when it has none (None: the predicted class).
    `endpoints` (position -> f(baseline), f(x) of the target) is read and filled, so a later
    rung adds no extra rows.
    """
    inputs = batch.rows(indices)
    input_ids = inputs.pop("input_ids")
    names = tuple(sorted(inputs))
    extra = tuple(inputs[name] for name in names)
    layer = classifier.model.get_input_embeddings()
    forward = _through_layer(class_probabilities(classifier, names), layer)
    known = endpoints if endpoints is not None else {}
    chosen = list(targets)
    baseline = baseline_ids(classifier, input_ids)
    with torch.no_grad():
        start, end = layer(baseline), layer(input_ids)
    texts = len(indices)
    ends = _EndRows.needed(classifier.baselines, indices, known, chosen, (baseline, *extra))
    step_sizes, alphas = _quadrature(job.method, job.n_steps, start)
    steps_per_pass = max(1, rows_per_pass // texts)
    width = int(input_ids.shape[1])
    if ends.rows and (
        len(ends.rows) * width > FUSED_ENDS_TOKENS
        or job.max_tokens // width < texts + len(ends.rows)
    ):
        # Too many for the first pass, or no room beside a step of every text: a pass of their
        # own, without gradients (a quarter of the memory per token: within max_batch_tokens).
        rows = torch.tensor(ends.rows, dtype=torch.long, device=input_ids.device)
        with torch.no_grad():
            at_ends = forward(ends.values(end, start), input_ids[rows], *(t[rows] for t in extra))
        ends.keep(at_ends, indices, chosen, known, predicted, classifier.baselines)
        ends = _EndRows.none()
    total = torch.zeros_like(end, dtype=torch.float32)  # a half-precision model sums in fp32
    done = 0
    while done < job.n_steps:
        with_ends = ends if done == 0 else _EndRows.none()
        # The extra rows may take the place of steps, not the tokens' bound.
        room = max(1, (job.max_tokens // width - len(with_ends.rows)) // texts)
        count = min(steps_per_pass, room, job.n_steps - done)
        alpha = alphas[done : done + count].view(-1, 1, 1, 1)
        path = (start + alpha * (end - start)).reshape(count * texts, *end.shape[1:])
        path.requires_grad_()
        values = torch.cat([path, with_ends.values(end, start)])
        steps = [k for _ in range(count) for k in range(texts)]
        rows = torch.tensor(steps + with_ends.rows, dtype=torch.long, device=input_ids.device)
        with torch.enable_grad():
            probabilities = forward(values, input_ids[rows], *(t[rows] for t in extra))
            if with_ends.rows:
                at_ends = probabilities[count * texts :].detach()
                with_ends.keep(at_ends, indices, chosen, known, predicted, classifier.baselines)
            target = torch.tensor(chosen, device=probabilities.device).repeat(count)
            out = probabilities[: count * texts].gather(1, target.unsqueeze(1)).sum()
            (grads,) = torch.autograd.grad(out, path)
        weights = step_sizes[done : done + count].view(-1, 1, 1, 1)
        total += (grads.view(count, *end.shape) * weights).sum(dim=0)
        done += count
    attributions = ((end - start).float() * total).detach()
    # Completeness: the attributions of a text add up to f(x) - f(baseline), up to delta.
    totals = attributions.reshape(texts, -1).sum(dim=1).cpu()
    scores = attributions.sum(dim=-1).cpu()
    mask = inputs["attention_mask"].bool().cpu()
    ids = input_ids.cpu()
    return [
        Explanation(
            words=classifier.tokens(ids[row][mask[row]]),
            importances=[float(v) for v in scores[row][mask[row]]],
            delta=float(totals[row]) - (known[pos][1] - known[pos][0]),
            target=int(target_class),  # type: ignore[arg-type]  # set by the first pass
            n_steps=job.n_steps,
        )
        for row, (pos, target_class) in enumerate(zip(indices, chosen, strict=True))
    ]


@dataclass(frozen=True)
class _EndRows:
    """The rows for f(x) and f(baseline) one _integrate call still needs: `rows` lists the
    text (by its place in the call) of each, x rows first, then the baselines not memoized."""

    texts: tuple[int, ...]
    rows: list[int]
    keys: tuple[bytes, ...]
    memoized: dict[int, torch.Tensor]

    @classmethod
    def none(cls) -> _EndRows:
        return cls((), [], (), {})

    @classmethod
    def needed(
        cls,
        memo: RowMemo,
        indices: tuple[int, ...],
        known: dict[int, tuple[float, float]],
        chosen: list[int | None],
        baseline_inputs: tuple[torch.Tensor, ...],
    ) -> _EndRows:
        texts = tuple(k for k, pos in enumerate(indices) if pos not in known or chosen[k] is None)
        keys = tuple(RowMemo.key([t[k] for t in baseline_inputs]) for k in texts)
        memoized = {
            k: p for k, key in zip(texts, keys, strict=True) if (p := memo.get(key)) is not None
        }
        fresh = [k for k in texts if k not in memoized]
        return cls(texts, [*texts, *fresh], keys, memoized)

    def values(self, end: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """The layer's values of the rows: the input's for x, the baseline's for the rest."""
        x, fresh = self.rows[: len(self.texts)], self.rows[len(self.texts) :]
        return torch.cat([end[x], start[fresh]])

    def keep(
        self,
        probabilities: torch.Tensor,
        indices: tuple[int, ...],
        chosen: list[int | None],
        known: dict[int, tuple[float, float]],
        predicted: dict[int, torch.Tensor] | None,
        memo: RowMemo,
    ) -> None:
        """Targets, ends and predictions from the rows' probabilities; memoizes the baselines."""
        at_x = probabilities[: len(self.texts)].cpu()
        at_baseline = dict(self.memoized)
        fresh = self.rows[len(self.texts) :]
        at_baseline.update(zip(fresh, probabilities[len(self.texts) :].cpu(), strict=True))
        for j, k in enumerate(self.texts):
            if k not in self.memoized:
                memo.put(self.keys[j], at_baseline[k])
            target = chosen[k]
            if target is None:
                target = chosen[k] = int(at_x[j].argmax())
            known[indices[k]] = (float(at_baseline[k][target]), float(at_x[j][target]))
            if predicted is not None:
                predicted[indices[k]] = at_x[j]


def _quadrature(
    method: Method, n_steps: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum's step sizes (fp32) and path points (alphas, in `like`'s dtype, so that the path
    stays in the model's precision) of `method` with `n_steps` points."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    sizes, alphas = approximation_parameters(method)
    return (
        torch.tensor(sizes(n_steps), device=like.device, dtype=torch.float32),
        torch.tensor(alphas(n_steps), device=like.device, dtype=like.dtype),
    )


def _through_layer(
    forward: Callable[..., torch.Tensor], layer: torch.nn.Module
) -> Callable[..., torch.Tensor]:
    """forward(values, input_ids, *extra): the model on input_ids with `layer`'s output
    replaced by `values` (the points of the integration path)."""

    def run(values: torch.Tensor, input_ids: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        hook = layer.register_forward_hook(lambda _module, _args, _output: values)
        try:
            return forward(input_ids, *extra)
        finally:
            hook.remove()

    return run


def merge_words(
    explanation: Explanation,
    text: str,
    word_ids: Sequence[int | None] | None,
    offsets: Sequence[tuple[int, int]] | None,
) -> Explanation:
    """The explanation in the words of `text` as written (granularity "words").

    A word is a run of non-space characters of the text, with the punctuation at its edges split
    off as a word of its own: "site-specific" and "3.5" stay whole, "bioavailability." is
    "bioavailability" and ".", "(Fig." is "(", "Fig", ".". Case, accents and hyphens are the
    text's, not the tokenizer's. A token that spans two such words (a BPE merge of a word and its
    full stop) joins them. A word's importance is the sum of its tokens' importances.

    Special tokens ([CLS], [SEP], <s>, </s>) are left out: the baseline keeps them, so their
    importance is exactly 0 and the total is unchanged; one that does carry importance stays in
    its place under its token name, so the sum always equals the pieces' sum. Words the model
    never read (past the truncation point) are not listed. Without character offsets (a slow
    tokenizer) the explanation stays in pieces and its note says why.
    """
    if offsets is None or word_ids is None:
        return dataclasses.replace(explanation, note=SLOW_TOKENIZER_NOTE)
    segments = _text_words(text)
    starts = [start for start, _ in segments]
    # joined[i]: segments i and i + 1 are one word because a token spans both.
    joined = [False] * len(segments)
    owner: list[int | None] = []  # the segment each token starts in; None: a special token
    for pos in range(len(explanation.words)):
        start, end = offsets[pos]
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end <= start:
            # No text behind it: a special token, or a zero-width piece of a word (-1: resolved
            # below to the word before it, or after it at the start).
            owner.append(None if word_ids[pos] is None else -1)
            continue
        first = max(bisect.bisect_right(starts, start) - 1, 0)
        for i in range(first, max(bisect.bisect_left(starts, end) - 1, first)):
            joined[i] = True
        owner.append(first)
    real = [o for o in owner if o is not None and o >= 0]
    previous = real[0] if real else None
    for pos, segment in enumerate(owner):
        if segment == -1:
            owner[pos] = previous
        elif segment is not None:
            previous = segment
    root = list(range(len(segments)))
    for i in range(1, len(segments)):
        if joined[i - 1]:
            root[i] = root[i - 1]
    words: list[str] = []
    importances: list[float] = []
    current: int | None = None
    for token, score, segment in zip(
        explanation.words, explanation.importances, owner, strict=True
    ):
        if segment is None:
            if score != 0.0:
                words.append(token)
                importances.append(score)
                current = None
            continue
        if root[segment] == current:
            importances[-1] += score
            continue
        current = root[segment]
        last = next(i for i in range(current, len(segments)) if not joined[i])
        words.append(text[segments[current][0] : segments[last][1]])
        importances.append(score)
    return dataclasses.replace(
        explanation, words=words, importances=importances, granularity="words", note=None
    )


def _text_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text`, edge punctuation split off (see merge_words)."""
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        head = start
        while head < end and _punctuation(text[head]):
            head += 1
        if head == end:  # only punctuation: "--", "...", "(.)"
            spans.append((start, end))
            continue
        tail = end
        while _punctuation(text[tail - 1]):
            tail -= 1
        spans.extend(
            span for span in ((start, head), (head, tail), (tail, end)) if span[0] < span[1]
        )
    return spans


def _punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")
