"""Explanation invariants for BERT, RoBERTa and DistilBERT, checked against the model itself.

sum(importances) - (f(x) - f(baseline)) == delta, where the test computes f (probability of the
target class) for the text and for its baseline ([CLS] [PAD]... [SEP]) on its own.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from typing import Any

import pytest
import torch
from support.fake_context import HttpRequest
from support.in_process_service import (
    TEST_SETTINGS,
    call,
    make_service,
    recorded_passes,
    reference_tokens,
    target_probability,
)
from support.tiny_models import Family

from scibert_pack.handlers.explain import (
    FUSED_ENDS_TOKENS,
    SLOW_TOKENIZER_NOTE,
    ExplainJob,
    Explanation,
    baseline_ids,
    class_probabilities,
    merge_words,
)
from scibert_pack.handlers.explain import explain as run_explain
from scibert_pack.handlers.model import RowMemo
from scibert_pack.handlers.service import ClassifierService

TEXTS = [
    "risk assessment implications of site-specific oral relative bioavailability .",
    "quantum states of the photon decay in the magnetic field .",
    "the catalyst speeds up the reaction between the acid and the base .",
    "cells divide",
]
LABELS = ["biology", "chemistry", "physics"]
FAMILIES = ["bert", "roberta", "distilbert"]


@pytest.fixture(scope="module")
def services(trained: dict[Family, tuple[Any, Any]]) -> dict[Family, ClassifierService]:
    # The explain time budget is tested in test_handler_budget.py; here, on a loaded machine, its
    # learned rate would refuse requests these invariants need answered.
    return {
        family: ClassifierService.from_model(
            *pair, TEST_SETTINGS, name="scibert", version="2.1", response_timeout_s=3600.0
        )
        for family, pair in trained.items()
    }


def explain(service: ClassifierService, texts: list[str], **params: object) -> list[dict]:
    (response,) = call(service, [HttpRequest({"texts": texts, "parameters": params}, explain=True)])
    assert response.status == 200, response.body
    return list(response.body)


def predict(service: ClassifierService, texts: list[str]) -> list[dict]:
    (response,) = call(service, [HttpRequest({"texts": texts})])
    return list(response.body)


@pytest.mark.parametrize("family", FAMILIES)
def test_importances_add_up_to_the_probability_change(
    services: dict[Family, ClassifierService],
    trained: dict[Family, tuple[Any, Any]],
    family: Family,
) -> None:
    model, tokenizer = trained[family]
    explanations = explain(services[family], TEXTS, granularity="pieces")
    in_words = explain(services[family], TEXTS)
    predictions = predict(services[family], TEXTS)
    assert len(explanations) == len(in_words) == len(TEXTS)
    changes = []
    for text, item, words, prediction in zip(
        TEXTS, explanations, in_words, predictions, strict=True
    ):
        assert item["words"] == reference_tokens(tokenizer, text)
        assert len(item["importances"]) == len(item["words"])
        # The default speaks the text's words; the sum and delta are the pieces'.
        expected = text.split()[: len(words["words"])] if item["truncated"] else text.split()
        assert words["words"] == expected and words["granularity"] == "words"
        assert sum(words["importances"]) == pytest.approx(sum(item["importances"]), abs=1e-6)
        assert words["delta"] == item["delta"]
        assert item["target"] == item["label"] == prediction["label"]
        fx, fb = target_probability(model, tokenizer, text, LABELS.index(item["target"]))
        assert fx == pytest.approx(prediction["probabilities"][item["target"]], abs=1e-5)
        assert sum(item["importances"]) - (fx - fb) == pytest.approx(item["delta"], abs=1e-4)
        assert abs(item["delta"]) < 0.01
        changes.append(abs(fx - fb))
    # The invariant must be able to fail: the probabilities do move between text and baseline.
    assert max(changes) > 0.01


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", ["physics", 0], ids=["label", "index"])
def test_a_named_target_is_explained(
    services: dict[Family, ClassifierService],
    trained: dict[Family, tuple[Any, Any]],
    family: Family,
    target: str | int,
) -> None:
    model, tokenizer = trained[family]
    name = target if isinstance(target, str) else LABELS[target]
    (item,) = explain(services[family], TEXTS[1:2], target=target)
    assert item["target"] == name
    fx, fb = target_probability(model, tokenizer, TEXTS[1], LABELS.index(name))
    assert sum(item["importances"]) - (fx - fb) == pytest.approx(item["delta"], abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_padding_contributes_nothing(
    services: dict[Family, ClassifierService], family: Family
) -> None:
    """A short text explained beside a long one gets the explanation it gets alone."""
    together = explain(services[family], [TEXTS[0], TEXTS[3]])
    (alone,) = explain(services[family], [TEXTS[3]])
    assert together[1]["words"] == alone["words"]
    assert together[1]["importances"] == pytest.approx(alone["importances"], abs=1e-5)
    assert together[1]["delta"] == pytest.approx(alone["delta"], abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle"])
def test_the_same_as_captums_layer_integrated_gradients(
    services: dict[Family, ClassifierService], family: Family, method: str
) -> None:
    """The explanation skips LayerIntegratedGradients' extra passes, not its arithmetic: the
    importances are Captum's for the word-embedding layer, the delta its convergence delta."""
    from captum.attr import LayerIntegratedGradients

    classifier = services[family].classifier
    batch = classifier.tokenize(TEXTS)
    targets = (0, 2, 1, 0)
    job = ExplainJob((0, 1, 2, 3), targets, 12, 64, 10**6, method=method)  # type: ignore[arg-type]
    ours = run_explain(classifier, batch, job)
    inputs = batch.rows(range(len(TEXTS)))
    input_ids = inputs.pop("input_ids")
    names = tuple(sorted(inputs))
    lig = LayerIntegratedGradients(
        class_probabilities(classifier, names), classifier.model.get_input_embeddings()
    )
    attributions, deltas = lig.attribute(
        inputs=input_ids,
        baselines=baseline_ids(classifier, input_ids),
        additional_forward_args=tuple(inputs[name] for name in names),
        target=torch.tensor(targets),
        n_steps=12,
        method=method,
        internal_batch_size=64,
        return_convergence_delta=True,
    )
    mask = inputs["attention_mask"].bool()
    scores = attributions.sum(dim=-1)
    for row, got in enumerate(ours):
        assert got.importances == pytest.approx(scores[row][mask[row]].tolist(), abs=1e-6)
        assert got.delta == pytest.approx(float(deltas[row]), abs=1e-6)


def fresh_service(model: Any, tokenizer: Any) -> ClassifierService:
    """A service with nothing memoized, whose budget has a (fast) measured rate: no calibration
    explanation runs before the one under test."""
    service = make_service(model, tokenizer)
    service.budget.seconds_per_token_step = 1e-9
    return service


SAME_LENGTH_CANDIDATES = [
    "the photon decays",
    "the cells divide",
    "the acid reacts",
    "cells divide",
    "photon decay",
    "the field",
    "the base",
]


@pytest.mark.parametrize("family", FAMILIES)
def test_an_explanation_is_its_steps_plus_two_rows_and_no_prediction_pass(
    trained: dict[Family, tuple[Any, Any]], family: Family
) -> None:
    """Model passes of one explain request: the integration steps, the first pass with two more
    rows (f(x), also the prediction, and f(baseline)); a ladder that climbs adds them once, and
    a baseline the model has seen (same length and layout) is not run again."""
    model, tokenizer = trained[family]
    service = fresh_service(model, tokenizer)
    with recorded_passes(model) as shapes:
        explain(service, TEXTS[:1], n_steps=20)
    width = shapes[0][1]
    assert shapes == [(20 + 2, width)]
    with recorded_passes(model) as shapes:
        (item,) = explain(service, TEXTS[:1], tolerance=1e-6)
    rungs = [8, 16, 32, 64][: [8, 16, 32, 64].index(item["n_steps"]) + 1]
    assert len(rungs) > 1  # the ladder did climb
    assert shapes == [(8 + 1, width)] + [(steps, width) for steps in rungs[1:]]


@pytest.mark.parametrize("family", FAMILIES)
def test_many_texts_get_their_ends_in_a_pass_without_gradients(
    trained: dict[Family, tuple[Any, Any]], family: Family
) -> None:
    """Past FUSED_ENDS_TOKENS the two rows per text would cost their backward: they get a pass
    of their own, still no prediction pass."""
    model, tokenizer = trained[family]
    with recorded_passes(model) as shapes:
        explain(fresh_service(model, tokenizer), TEXTS, n_steps=10)
    with recorded_passes(model, gradients_only=True) as with_gradients:
        explain(fresh_service(model, tokenizer), TEXTS, n_steps=10)
    width = shapes[0][1]
    assert 2 * len(TEXTS) * width > FUSED_ENDS_TOKENS
    assert shapes == [(2 * len(TEXTS), width), (10 * len(TEXTS), width)]
    assert with_gradients == [(10 * len(TEXTS), width)]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_memoized_baseline_gives_the_same_delta(
    trained: dict[Family, tuple[Any, Any]], family: Family
) -> None:
    """Two texts of one length share their baseline row: the second explanation takes f(baseline)
    from the first, and its delta is what a fresh server computes."""
    model, tokenizer = trained[family]
    length = {t: len(tokenizer(t)["input_ids"]) for t in SAME_LENGTH_CANDIDATES}
    first, second = next(
        (a, b)
        for a, b in itertools.combinations(SAME_LENGTH_CANDIDATES, 2)
        if length[a] == length[b]
    )
    service = fresh_service(model, tokenizer)
    explain(service, [first], n_steps=12)
    assert len(service.classifier.baselines) == 1
    with recorded_passes(model) as shapes:
        (memoized,) = explain(service, [second], n_steps=12)
    assert shapes == [(12 + 1, length[second])]
    (fresh,) = explain(fresh_service(model, tokenizer), [second], n_steps=12)
    assert memoized["delta"] == pytest.approx(fresh["delta"], abs=1e-6)
    assert memoized["importances"] == pytest.approx(fresh["importances"], abs=1e-6)
    assert len(service.classifier.baselines) == 1


def test_the_row_memo_drops_the_least_recently_used() -> None:
    memo = RowMemo(capacity=2)
    a, b, c = (RowMemo.key([torch.tensor([n, 1])]) for n in (1, 2, 3))
    memo.put(a, torch.tensor([0.1]))
    memo.put(b, torch.tensor([0.2]))
    assert memo.get(a) is not None  # a is now the most recent
    memo.put(c, torch.tensor([0.3]))
    assert (memo.get(b), len(memo)) == (None, 2)
    assert [float(v) for v in (memo.get(a), memo.get(c))] == pytest.approx([0.1, 0.3])  # type: ignore[arg-type]


MERGE_CASES = [
    pytest.param("bert", "hello photon", ["hello", "photon"], id="bert-wordpiece"),
    pytest.param(
        "roberta",
        "Bioavailability of photons",
        ["Bioavailability", "of", "photons"],
        id="roberta-bpe",
    ),
    pytest.param("distilbert", "zebra cells", ["zebra", "cells"], id="distilbert-wordpiece"),
]


@pytest.mark.parametrize(("family", "text", "words"), MERGE_CASES)
@pytest.mark.parametrize(
    "params", [{}, {"merge_subwords": True}], ids=["default", "merge-subwords-alias"]
)
def test_words_join_pieces_and_keep_the_sum(
    services: dict[Family, ClassifierService],
    trained: dict[Family, tuple[Any, Any]],
    family: Family,
    text: str,
    words: list[str],
    params: dict[str, object],
) -> None:
    _, tokenizer = trained[family]
    assert len(reference_tokens(tokenizer, text)) > len(words)  # the text does split into pieces
    (pieces,) = explain(services[family], [text], n_steps=20, granularity="pieces")
    (merged,) = explain(services[family], [text], n_steps=20, **params)
    assert merged["words"] == words
    assert len(merged["importances"]) == len(words)
    assert sum(merged["importances"]) == pytest.approx(sum(pieces["importances"]), abs=1e-6)


def test_fewer_steps_are_honoured(services: dict[Family, ClassifierService]) -> None:
    """n_steps reaches Captum: 1 step gives a different (worse) integral than 50."""
    (coarse,) = explain(services["roberta"], TEXTS[:1], n_steps=1)
    (fine,) = explain(services["roberta"], TEXTS[:1])
    assert abs(coarse["delta"]) > abs(fine["delta"])


@pytest.mark.parametrize("family", FAMILIES)
def test_explanations_within_a_small_token_budget_are_the_same(
    services: dict[Family, ClassifierService],
    trained: dict[Family, tuple[Any, Any]],
    family: Family,
) -> None:
    """max_batch_tokens 64 gives explanation passes 16 padded tokens: one row per pass here."""
    model, tokenizer = trained[family]
    small = make_service(model, tokenizer, replace(TEST_SETTINGS, max_batch_tokens=64))
    assert small.settings.max_explain_tokens == 16
    with recorded_passes(model, gradients_only=True) as shapes:
        budgeted = explain(small, TEXTS, n_steps=20)
    reference = explain(services[family], TEXTS, n_steps=20)
    # Every pass within 16 padded tokens (a text longer than that alone): the three texts of
    # more than 8 tokens take one pass per step, instead of 4 texts x 20 steps in one pass.
    assert all(rows * width <= 16 or rows == 1 for rows, width in shapes), shapes
    assert len(shapes) >= 3 * 20
    for got, expected in zip(budgeted, reference, strict=True):
        assert got["words"] == expected["words"]
        assert got["importances"] == pytest.approx(expected["importances"], abs=1e-5)
        assert got["delta"] == pytest.approx(expected["delta"], abs=1e-5)


# -- merge_words on hand-made tokenizations: what real tokenizers may hand it -------------------


def _x(tokens: list[str], importances: list[float]) -> Explanation:
    return Explanation(tokens, importances, delta=0.01, target=0)


# (text, tokens, word ids, offsets, importance per token, words, importance per word)
WORDS_CASES = [
    pytest.param(
        "Oral bioavailability.",
        ["[CLS]", "oral", "bio", "##avail", "##ability", ".", "[SEP]"],
        [None, 0, 1, 1, 1, 2, None],
        [(0, 0), (0, 4), (5, 8), (8, 13), (13, 20), (20, 21), (0, 0)],
        [0.0, 0.1, 0.2, 0.25, 0.125, -0.5, 0.0],
        ["Oral", "bioavailability", "."],
        [0.1, 0.575, -0.5],
        id="wordpiece",
    ),
    pytest.param(
        "a site-specific dose",
        ["<s>", "a", "Ġsite", "-", "specific", "Ġdose", "</s>"],
        [None, 0, 1, 2, 3, 4, None],
        [(0, 0), (0, 1), (2, 6), (6, 7), (7, 15), (16, 20), (0, 0)],
        [0.0, 0.1, 0.2, 0.25, 0.125, -0.5, 0.0],
        ["a", "site-specific", "dose"],
        [0.1, 0.575, -0.5],
        id="bpe-hyphen",
    ),
    pytest.param(
        "Dose) matters.",
        ["<s>", "▁Dose", ")", "▁matter", "s."],  # a piece spanning a word and its full stop
        [None, 0, 0, 1, 1],
        [(0, 0), (0, 4), (4, 5), (5, 12), (12, 14)],  # "▁" offsets may hold the space
        [0.0, 0.1, 0.2, 0.25, 0.125],
        ["Dose", ")", "matters."],
        [0.1, 0.2, 0.375],
        id="sentencepiece-span-across",
    ),
    pytest.param(
        "cells",
        ["[CLS]", "cell", "", "##s", "[SEP]"],  # a zero-width piece joins its word
        [None, 0, 0, 0, None],
        [(0, 0), (0, 4), (4, 4), (4, 5), (0, 0)],
        [0.0, 0.5, 0.25, 0.125, 0.0],
        ["cells"],
        [0.875],
        id="zero-width-piece",
    ),
    pytest.param(
        "cells divide " + "x " * 50,
        ["[CLS]", "cells", "divide", "x", "[SEP]"],  # truncated: words never read are not listed
        [None, 0, 1, 2, None],
        [(0, 0), (0, 5), (6, 12), (13, 14), (0, 0)],
        [0.0, 0.5, 0.25, 0.125, 0.0],
        ["cells", "divide", "x"],
        [0.5, 0.25, 0.125],
        id="truncated",
    ),
]


@pytest.mark.parametrize(
    ("text", "tokens", "word_ids", "offsets", "scores", "words", "importances"), WORDS_CASES
)
def test_merge_words_takes_the_words_from_the_text(
    text: str,
    tokens: list[str],
    word_ids: list[int | None],
    offsets: list[tuple[int, int]],
    scores: list[float],
    words: list[str],
    importances: list[float],
) -> None:
    merged = merge_words(_x(tokens, scores), text, word_ids, offsets)
    assert merged.words == words
    assert merged.importances == pytest.approx(importances, abs=1e-12)
    assert sum(merged.importances) == pytest.approx(sum(scores), abs=1e-12)
    assert merged.granularity == "words" and merged.note is None
    assert (merged.delta, merged.target) == (0.01, 0)


def test_a_special_token_with_importance_keeps_its_place() -> None:
    """The sum always holds: a special token that carries importance is not dropped."""
    x = _x(["[CLS]", "cells", "[SEP]"], [0.25, 0.5, 0.0])
    merged = merge_words(x, "cells", [None, 0, None], [(0, 0), (0, 5), (0, 0)])
    assert merged.words == ["[CLS]", "cells"]
    assert sum(merged.importances) == sum(x.importances)


def test_without_offsets_the_pieces_stay_and_the_note_says_why() -> None:
    x = _x(["[CLS]", "cell", "##s", "[SEP]"], [0.0, 0.4, 0.6, 0.0])
    merged = merge_words(x, "cells", None, None)
    assert (merged.words, merged.importances) == (x.words, x.importances)
    assert merged.granularity == "pieces"
    assert merged.note == SLOW_TOKENIZER_NOTE


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bfloat16_model_is_explained_in_its_precision(
    trained: dict[Family, tuple[Any, Any]], family: Family
) -> None:
    """transformers loads a checkpoint in its saved dtype: the integration path stays in it (a
    float32 path would not go through bfloat16 layers), and the sum is kept in float32."""
    model, tokenizer = trained[family]
    half = copy.deepcopy(model).to(torch.bfloat16)
    (item,) = explain(fresh_service(half, tokenizer), TEXTS[:1], n_steps=16, granularity="pieces")
    (reference,) = explain(
        fresh_service(model, tokenizer), TEXTS[:1], n_steps=16, granularity="pieces"
    )
    assert item["words"] == reference["words"]
    r = torch.corrcoef(torch.tensor([item["importances"], reference["importances"]]))[0, 1]
    assert float(r) > 0.95
    assert abs(item["delta"]) < 0.05
