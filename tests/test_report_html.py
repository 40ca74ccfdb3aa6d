"""The HTML explanation report: one section per text, one span per word, shading that follows
|importance|, everything escaped, written atomically."""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

from scibert_pack.client.inference_client import ServedExplanation
from scibert_pack.client.report_html import render_report, word_alphas, write_report


def _explanation(words: list[str], importances: list[float], **kw: object) -> ServedExplanation:
    fields: dict[str, object] = {
        "text": " ".join(w for w in words if not w.startswith("[")),
        "label": "medicine",
        "target": "medicine",
        "delta": 0.0123,
        "truncated": False,
    }
    fields.update(kw)
    return ServedExplanation(words=words, importances=importances, **fields)  # type: ignore[arg-type]


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
PIECES = _explanation(
    ["[CLS]", "bio", "##avail", "##ability", "[SEP]"],
    [0.0, 0.2, 0.1, 0.3, 0.0],
    text="bioavailability",
)
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
    explanations: list[ServedExplanation],
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


@pytest.mark.parametrize(
    ("importances", "white"),
    [
        pytest.param([-1.0, 0.1], [True, False], id="strong-red-white-ink"),
        pytest.param([1.0, -0.1], [False, False], id="strong-green-dark-ink"),
        pytest.param([-0.5, 1.0], [False, False], id="half-red-dark-ink"),
    ],
)
def test_ink_stays_readable_on_strong_shades(importances: list[float], white: list[bool]) -> None:
    spans = _parse(render_report([_explanation(["one", "two"], importances)])).sections[0]
    assert ["color: #fff" in s["style"] for s in spans] == white


def test_special_tokens_are_greyed_not_shaded() -> None:
    spans = _parse(render_report([BLOG])).sections[0]
    assert [s["text"] for s in spans if "special" in s["class"].split()] == ["[CLS]", "[SEP]"]
    assert all("style" not in s for s in spans if "special" in s["class"].split())


def test_all_zero_importances_shade_nothing() -> None:
    assert word_alphas(ZEROS) == [0.0, 0.0, 0.0, 0.0]


def test_word_pieces_join_their_word() -> None:
    page = render_report([PIECES])
    assert '>bio</span><span class="w jl jr"' in page  # no space before a ## piece
    spans = _parse(page).sections[0]
    assert [s["text"] for s in spans[1:4]] == ["bio", "avail", "ability"]
    assert spans[2]["title"] == "##avail: +0.1000"


BLOG_TEXT = "Risk assessment implications of site-specific oral relative bioavailability."
SPACING_CASES = [
    pytest.param(
        ["Risk", "assessment", "implications", "of", "site-specific", "oral", "relative",
         "bioavailability", "."],
        BLOG_TEXT,
        BLOG_TEXT,
        id="words",
    ),
    pytest.param(
        ["[CLS]", "risk", "assessment", "implications", "of", "site", "-", "specific", "oral",
         "relative", "bio", "##ava", "##ila", "##bility", ".", "[SEP]"],
        BLOG_TEXT,
        "[CLS] " + BLOG_TEXT + " [SEP]",  # lowercased pieces show the text's letters
        id="uncased-pieces",
    ),
    pytest.param(
        ["<s>", "Risk", "Ġassessment", "Ġsite", "-", "specific", "Ġbio", "avail", "ability",
         ".", "</s>"],
        "Risk assessment site-specific bioavailability.",
        "<s> Risk assessment site-specific bioavailability. </s>",
        id="bpe-pieces",
    ),
    pytest.param(
        ["[CLS]", "cafe", "-", "au", "-", "lait", "[UNK]", "[SEP]"],
        "Café-au-lait ☃",
        "[CLS] cafe - au - lait [UNK] [SEP]",  # not the text's letters: spaced by markers
        id="accent-stripped-fallback",
    ),
    pytest.param(
        ["[CLS]", "bio", "##ava", "##ila", "##bility", "[SEP]"],
        "x",
        "[CLS] bioavailability [SEP]",
        id="pieces-without-text",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("words", "text", "shown"), SPACING_CASES)
def test_words_are_spaced_as_in_the_text(words: list[str], text: str, shown: str) -> None:
    x = _explanation(words, [0.1] * len(words), text=text)
    page = render_report([x])
    paragraph = re.search(r'<p class="words">(.*?)</p>', page, re.S)
    assert paragraph is not None
    assert html.unescape(re.sub(r"<[^>]+>", "", paragraph.group(1))) == shown
    if text == BLOG_TEXT:
        assert " - " not in paragraph.group(1)


def test_long_texts_and_long_words_wrap() -> None:
    page = render_report([BLOG])
    css = page[page.index("<style>") : page.index("</style>")]
    for rule in (".text", ".words"):
        block = re.search(re.escape(rule) + r" \{([^}]*)\}", css)
        assert block is not None and "overflow-wrap: anywhere" in block.group(1)
    assert "max-width: 60rem" in css
    # Words stay whole on a line ("site-" / "specific" would read as two); a very long one wraps.
    assert re.search(r"\.w \{[^}]*white-space: nowrap", css)
    assert re.search(r"\.w\.long \{[^}]*white-space: normal", css)
    long_word = "supercalifragilistic" * 5
    spans = _parse(render_report([_explanation(["short", long_word], [0.1, 0.2])])).sections[0]
    assert ["long" in s["class"].split() for s in spans] == [False, True]
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


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


# -- the report as a person sees it: headless Chromium ------------------------------------------

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.py"


def _screenshot_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize(("width", "height"), [(1280, 900), (640, 900)], ids=["desktop", "narrow"])
def test_screenshot_of_the_report_reads_well(tmp_path: Path, width: int, height: int) -> None:
    """The sample report (blog words, a long text with a very long word, pieces, hostile text)
    rendered by a real browser: the picture has the window's size, is not blank, and nothing
    runs past the page's right margin (long texts and words wrap)."""
    shot = _screenshot_script()
    if shot.find_chromium() is None:
        pytest.skip(
            "chromium is not installed, so the report cannot be screenshot; "
            "scripts/setup-env.sh installs it when run as root with apt-get "
            "(or: apt-get install chromium)"
        )
    png = tmp_path / "report.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--sample", str(png), "--size", f"{width}x{height}"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "site-specific" in page and " - " not in re.sub(r"<[^>]+>", "", page.split("<h2>")[1])
    got_width, got_height, rows = shot.png_pixels(png)
    assert (got_width, got_height) == (width, height)
    colours = {pixel for row in rows[::4] for pixel in row}
    assert len(colours) > 50  # text, shading and bars, not a blank or one-colour page
    greens = [p for p in colours if p[1] > p[0] + 30 and p[1] > p[2] + 30]
    reds = [p for p in colours if p[0] > p[1] + 30 and p[0] > p[2] + 30]
    assert greens and reds  # both shadings are painted
    # The right margin (body padding, 1rem) holds only the page background: nothing overflows.
    margin = {pixel for row in rows for pixel in row[-8:]}
    assert margin == {rows[0][-1]}
