"""A self-contained HTML report of explanations: each word shaded by its importance.

One section per text: the text, label, target, delta, the probabilities when known, and every
word as a span whose background alpha is |importance| / the largest |importance| of that text
(green supports the target label, red speaks against it). Words are spaced as in the text
("site-specific", "bioavailability." stay together); long texts and long words wrap. Inline
CSS, no scripts, no fonts to fetch: the file opens anywhere, offline. Everything from the
model or the user is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from scibert_pack.client.inference_client import ServedExplanation
from scibert_pack.files import atomic_write_text

# Tokenizer markers, not words of the text: shown greyed, never shaded.
SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})
POSITIVE_RGB = (22, 163, 74)
NEGATIVE_RGB = (220, 38, 38)
TOP_WORDS = 5
LONG_WORD = 30  # characters: longer words may wrap inside

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; color: #1f2937; line-height: 1.5; }
h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.05rem; margin: 0 0 0.5rem; }
.meta, .legend { color: #4b5563; font-size: 0.9rem; }
section { border: 1px solid #e5e7eb; border-radius: 8px; padding: 1rem 1.2rem; margin: 1.2rem 0; }
.facts { display: flex; flex-wrap: wrap; gap: 0.4rem 1.5rem; margin: 0 0 0.8rem;
         font-size: 0.9rem; }
.facts dt { font-weight: 600; display: inline; }
.facts dd { display: inline; margin: 0 0 0 0.3rem; }
.text { overflow-wrap: anywhere; }
.words { font-size: 1.1rem; line-height: 2.1; overflow-wrap: anywhere; }
.w { padding: 0.15rem 0.2rem; border-radius: 4px; -webkit-box-decoration-break: clone;
     box-decoration-break: clone; white-space: nowrap; }
.w.long { white-space: normal; }
.w.jl { padding-left: 0; border-top-left-radius: 0; border-bottom-left-radius: 0; }
.w.jr { padding-right: 0; border-top-right-radius: 0; border-bottom-right-radius: 0; }
.special { color: #9ca3af; font-size: 0.75rem; }
.probs { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
.probs td { padding: 0.1rem 0.5rem 0.1rem 0; }
.bar { display: inline-block; height: 0.7rem; background: #6366f1; border-radius: 2px; }
.top { font-size: 0.9rem; color: #374151; }
.swatch { padding: 0 0.4rem; border-radius: 3px; }
"""


def render_report(
    explanations: Sequence[ServedExplanation],
    *,
    probabilities: Sequence[Mapping[str, float] | None] | None = None,
    title: str = "Explanations",
    model: str | None = None,
) -> str:
    """The report as one HTML document; `probabilities[i]` belongs to `explanations[i]`."""
    if probabilities is not None and len(probabilities) != len(explanations):
        raise ValueError(
            f"{len(probabilities)} probability maps for {len(explanations)} explanations"
        )
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if model:
        parts.append(f'<p class="meta">Model: <code>{e(model)}</code></p>')
    pos, neg = _rgba(POSITIVE_RGB, 0.6), _rgba(NEGATIVE_RGB, 0.6)
    parts.append(
        '<p class="legend">Integrated-gradients importance of each word for the target label: '
        f'<span class="swatch" style="background: {pos}">green</span> supports it, '
        f'<span class="swatch" style="background: {neg}">red</span> speaks against it; the '
        "stronger the shade, the larger the importance relative to the other words of that "
        "text (hover a word for its value). Delta is the attribution's convergence error: "
        "near 0 is good.</p>"
    )
    for index, explanation in enumerate(explanations):
        probs = probabilities[index] if probabilities is not None else None
        parts.append(_section(index + 1, explanation, probs))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    path: Path,
    explanations: Sequence[ServedExplanation],
    *,
    probabilities: Sequence[Mapping[str, float] | None] | None = None,
    title: str = "Explanations",
    model: str | None = None,
) -> Path:
    atomic_write_text(
        path,
        render_report(explanations, probabilities=probabilities, title=title, model=model),
    )
    return path


def word_alphas(explanation: ServedExplanation) -> list[float]:
    """Shade per word: |importance| / max |importance| over the text's real words (0 for
    special tokens and for a text whose importances are all zero)."""
    scale = max(
        (abs(v) for w, v in zip(explanation.words, explanation.importances, strict=True)
         if w not in SPECIAL_TOKENS),
        default=0.0,
    )  # fmt: skip
    return [
        0.0 if w in SPECIAL_TOKENS or scale == 0 else round(abs(v) / scale, 3)
        for w, v in zip(explanation.words, explanation.importances, strict=True)
    ]


def _section(number: int, x: ServedExplanation, probabilities: Mapping[str, float] | None) -> str:
    e = html.escape
    facts = [("label", x.label), ("target", x.target), ("delta", f"{x.delta:+.2e}")]
    if x.truncated:
        facts.append(("truncated", "yes: only the first tokens were read"))
    rows = [
        f'<section class="explanation" id="text-{number}">',
        f"<h2>Text {number}</h2>",
        f'<p class="text">{e(x.text)}</p>',
        '<dl class="facts">'
        + "".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in facts)
        + "</dl>",
    ]
    if probabilities:
        rows.append('<table class="probs">')
        for label, p in sorted(probabilities.items(), key=lambda kv: -kv[1]):
            width = max(0.0, min(1.0, p)) * 12
            rows.append(
                f"<tr><td>{e(label)}</td><td>{p:.3f}</td>"
                f'<td><span class="bar" style="width: {width:.2f}rem"></span></td></tr>'
            )
        rows.append("</table>")
    rows.append(f'<p class="words">{_words(x)}</p>')
    ranked = sorted(
        (p for p in zip(x.words, x.importances, strict=True) if p[0] not in SPECIAL_TOKENS),
        key=lambda p: abs(p[1]),
        reverse=True,
    )[:TOP_WORDS]
    if ranked:
        top = ", ".join(f"{e(_shown(w))} ({v:+.3f})" for w, v in ranked)
        rows.append(f'<p class="top">Most important: {top}</p>')
    rows.append("</section>")
    return "\n".join(rows)


def _words(x: ServedExplanation) -> str:
    """The word spans, spaced as the text is: whole words come back as written; pieces found in
    the text show its letters and join without a space; other pieces fall back on their markers
    ("##" continues a word, "Ġ"/"▁" starts one)."""
    e = html.escape
    placed = _place_in_text(x)
    out: list[str] = []
    for i, (word, value, alpha) in enumerate(
        zip(x.words, x.importances, word_alphas(x), strict=True)
    ):
        if placed is not None:
            shown, space = placed[i]
        else:
            shown, space = _shown(word), not _continues(i, x.words)
        glued_left = i > 0 and not space
        glued_right = i + 1 < len(x.words) and not (
            placed[i + 1][1] if placed is not None else not _continues(i + 1, x.words)
        )
        if i > 0 and space:
            out.append(" ")
        if word in SPECIAL_TOKENS:
            out.append(f'<span class="w special" title="special token">{e(word)}</span>')
            continue
        # A word is not broken at its hyphen ("site-" / "specific" would read as two words);
        # only one too long for a line may break anywhere.
        joins = " jl" * glued_left + " jr" * glued_right + " long" * (len(shown) > LONG_WORD)
        rgb = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
        ink = "; color: #fff" if _white_reads_better(rgb, alpha) else ""
        out.append(
            f'<span class="w{joins}" style="background: {_rgba(rgb, alpha)}{ink}" '
            f'title="{e(word)}: {value:+.4f}">{e(shown)}</span>'
        )
    return "".join(out)


TEXT_RGB = (31, 41, 55)  # body text, #1f2937


def _white_reads_better(rgb: tuple[int, int, int], alpha: float) -> bool:
    """Whether white text contrasts more than the body's dark text with this shade (over the
    white page), by WCAG relative luminance: a strong red needs white, a strong green does not."""
    shade = _luminance(tuple(round(255 - (255 - c) * alpha) for c in rgb))
    return (1.05 / (shade + 0.05)) > (shade + 0.05) / (_luminance(TEXT_RGB) + 0.05)


def _luminance(rgb: Sequence[int]) -> float:
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _place_in_text(x: ServedExplanation) -> list[tuple[str, bool]] | None:
    """Per word: its characters in the text and whether whitespace precedes it there, when
    every word (markers stripped, case ignored) is found in order with only whitespace between;
    None when they are not the text's (an uncased tokenizer's accents, [UNK])."""
    text = x.text
    folded = text.lower() if len(text.lower()) == len(text) else text
    cursor = 0
    placed: list[tuple[str, bool]] = []
    for word in x.words:
        if word in SPECIAL_TOKENS:
            placed.append((word, True))
            continue
        shown = _shown(word)
        at = text.find(shown, cursor)
        if at < 0 or text[cursor:at].strip():
            at = folded.find(shown.lower(), cursor)
        if at < 0 or text[cursor:at].strip() or not shown:
            return None
        placed.append((text[at : at + len(shown)], at > cursor or cursor == 0))
        cursor = at + len(shown)
    return placed


def _continues(i: int, words: Sequence[str]) -> bool:
    """Whether piece `i` continues the word before it, by the tokenizer's markers."""
    word = words[i]
    if i == 0 or word in SPECIAL_TOKENS or words[i - 1] in SPECIAL_TOKENS:
        return False
    if word.startswith("##"):
        return True
    # BPE / SentencePiece: a marker starts a word, its absence continues one.
    return any(w[:1] in _WORD_START for w in words) and word[:1] not in _WORD_START


_WORD_START = ("Ġ", "▁")


def _shown(word: str) -> str:
    if word.startswith("##") and len(word) > 2:
        return word[2:]
    if word[:1] in _WORD_START and len(word) > 1:
        return word[1:]
    return word


def _rgba(rgb: tuple[int, int, int], alpha: float) -> str:
    r, g, b = rgb
    return f"rgba({r}, {g}, {b}, {alpha:.3f})"
