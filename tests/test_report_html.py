"""The HTML explanation report: one section per text, one span per word, shading that follows
|importance|, everything escaped, written atomically."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from scibert_pack.demo.report_html import render_report, word_alphas, write_report
from scibert_pack.serving.client import Explanation


def _explanation(words: list[str], importances: list[float], **kw: object) -> Explanation:
    fields: dict[str, object] = {
        "text": " ".join(w for w in words if not w.startswith("[")),
        "label": "medicine",
        "target": "medicine",
        "delta": 0.0123,
        "truncated": False,
    }
    fields.update(kw)
    return Explanation(words=words, importances=importances, **fields)  # type: ignore[arg-type]


BLOG = _explanation(
    ["[CLS]", "Risk", "assessment", "oral", "bioavailability", ".", "[SEP]"],
    [0.0, 0.10, -0.05, 0.40, 0.25, -0.01, 0.0],
)
HOSTILE = _explanation(
    ["[CLS]", "<script>alert(1)</script>", "&amp;", '"quoted"', "[SEP]"],
    [0.0, -0.3, 0.2, 0.1, 0.0],
    text='<script>alert(1)</script> &amp; "quoted"',
    label="<b>bold</b>",
    target="<b>bold</b>",
)
PIECES = _explanation(["[CLS]", "bio", "##avail", "##ability", "[SEP]"], [0.0, 0.2, 0.1, 0.3, 0.0])
ZEROS = _explanation(["[CLS]", "nothing", "here", "[SEP]"], [0.0, 0.0, 0.0, 0.0])


class _Report(HTMLParser):
    """Sections, and per section the word spans (classes, style, title, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[list[dict[str, str]]] = []
        self.tags: set[str] = set()
        self._span: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and "explanation" in a.get("class", "").split():
            self.sections.append([])
        if tag == "span" and "w" in a.get("class", "").split():
            self._span = {**a, "text": ""}
            self.sections[-1].append(self._span)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._span = None

    def handle_data(self, data: str) -> None:
        if self._span is not None:
            self._span["text"] += data


def _parse(text: str) -> _Report:
    parser = _Report()
    parser.feed(text)
    parser.close()
    return parser


def _alpha(span: dict[str, str]) -> float:
    match = re.search(r"rgba\(\d+, \d+, \d+, ([0-9.]+)\)", span.get("style", ""))
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(
    "explanations",
    [
        pytest.param([BLOG], id="one"),
        pytest.param([BLOG, HOSTILE, PIECES, ZEROS], id="four"),
    ],
)
def test_one_section_per_explanation_and_one_span_per_word(
    explanations: list[Explanation],
) -> None:
    report = _parse(render_report(explanations))
    assert len(report.sections) == len(explanations)
    for spans, x in zip(report.sections, explanations, strict=True):
        assert len(spans) == len(x.words)
        assert [s["title"].rsplit(": ", 1)[0] for s in spans if "special" not in s["class"]] == [
            w for w in x.words if not w.startswith("[")
        ]


def test_shading_follows_absolute_importance() -> None:
    spans = _parse(render_report([BLOG])).sections[0]
    real = [
        (w, v, s)
        for w, v, s in zip(BLOG.words, BLOG.importances, spans, strict=True)
        if not w.startswith("[")
    ]
    by_importance = sorted(real, key=lambda r: abs(r[1]))
    alphas = [_alpha(s) for _, _, s in by_importance]
    assert alphas == sorted(alphas)
    assert len(set(alphas)) == len(alphas)
    assert alphas[-1] == 1.0  # the strongest word of the text is fully shaded
    assert _alpha(real[1][2]) == pytest.approx(0.125)  # |-0.05| / 0.40


def test_sign_picks_the_colour() -> None:
    spans = _parse(render_report([BLOG])).sections[0]
    assert spans[3]["style"].startswith("background: rgba(22, 163, 74,")  # oral +0.40
    assert spans[2]["style"].startswith("background: rgba(220, 38, 38,")  # assessment -0.05
    assert spans[3]["title"] == "oral: +0.4000"


def test_special_tokens_are_greyed_not_shaded() -> None:
    spans = _parse(render_report([BLOG])).sections[0]
    assert [s["text"] for s in spans if "special" in s["class"].split()] == ["[CLS]", "[SEP]"]
    assert all("style" not in s for s in spans if "special" in s["class"].split())


def test_all_zero_importances_shade_nothing() -> None:
    assert word_alphas(ZEROS) == [0.0, 0.0, 0.0, 0.0]


def test_word_pieces_join_their_word() -> None:
    page = render_report([PIECES])
    assert '>bio</span><span class="w"' in page  # no space before a ## piece
    spans = _parse(page).sections[0]
    assert [s["text"] for s in spans[1:4]] == ["bio", "avail", "ability"]
    assert spans[2]["title"] == "##avail: +0.1000"


def test_everything_from_the_model_is_escaped() -> None:
    page = render_report([HOSTILE], title="<i>t</i>", model="<m>")
    report = _parse(page)
    assert report.tags.isdisjoint({"script", "b", "i", "m"})
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;amp;" in page
    spans = report.sections[0]
    assert spans[1]["text"] == "<script>alert(1)</script>"
    assert spans[3]["title"] == '"quoted": +0.1000'


def test_facts_and_probabilities_are_shown() -> None:
    page = render_report([BLOG], probabilities=[{"medicine": 0.736, "biology": 0.1}], model="sci")
    assert "<dt>label</dt><dd>medicine</dd>" in page
    assert "<dt>target</dt><dd>medicine</dd>" in page
    assert "<dt>delta</dt><dd>+1.23e-02</dd>" in page
    assert page.index("<td>medicine</td><td>0.736</td>") < page.index(
        "<td>biology</td><td>0.100</td>"
    )
    assert "Most important: oral (+0.400), bioavailability (+0.250), Risk (+0.100)" in page


def test_self_contained() -> None:
    page = render_report([BLOG, HOSTILE])
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|@import|url\(|https?://", page)


def test_probabilities_must_match_the_explanations() -> None:
    with pytest.raises(ValueError, match="1 probability maps for 2 explanations"):
        render_report([BLOG, PIECES], probabilities=[{"medicine": 1.0}])


def test_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "report.html"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")
    assert write_report(target, [BLOG]) == target
    assert target.read_text(encoding="utf-8") == render_report([BLOG])
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]
