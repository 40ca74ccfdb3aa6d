"""The demo's labelled corpus: scientific sentences by field, with a fixed held-out split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scibert_pack.errors import InputError

CORPUS_FILE = "corpus.tsv"
# The 5th, 10th, ... sentence of each field is held out: fixed, so accuracy is comparable.
HELD_OUT_EVERY = 5


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class Corpus:
    labels: tuple[str, ...]  # in order of first appearance: the classifier's class indexes
    train: tuple[Example, ...]
    held_out: tuple[Example, ...]
    sha256: str  # of the file's bytes: a trained model records it to know it is current

    def label_id(self, label: str) -> int:
        return self.labels.index(label)


def load_corpus(path: Path | None = None) -> Corpus:
    """The shipped corpus (or `path`); InputError naming the line of any malformed row."""
    if path is None:
        data = resources.files(__package__).joinpath(CORPUS_FILE).read_bytes()
        shown = f"the shipped {CORPUS_FILE}"
    else:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(
                f"cannot read corpus {path} ({err.strerror})",
                fix="pass a readable FIELD<TAB>SENTENCE file",
            ) from err
        shown = str(path)
    return parse_corpus(data, shown)


def parse_corpus(data: bytes, shown: str = "corpus") -> Corpus:
    by_label: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{shown} is not UTF-8 ({err})", fix="save it as UTF-8") from err
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        label, sep, sentence = line.partition("\t")
        label, sentence = label.strip(), " ".join(sentence.split())
        if not sep or not label or not sentence or "\t" in sentence:
            raise InputError(
                f"line {number} of {shown} is not FIELD<TAB>SENTENCE: {line[:80]!r}",
                fix="write one field name, one tab, then the sentence",
            )
        key = sentence.casefold()
        if key in seen:
            raise InputError(
                f"line {number} of {shown} repeats the sentence of line {seen[key]}: "
                f"{sentence[:80]!r}",
                fix="remove the duplicate (it would leak between the splits)",
            )
        seen[key] = number
        by_label.setdefault(label, []).append(sentence)
    if len(by_label) < 2:
        raise InputError(
            f"{shown} has {len(by_label)} field(s); a classifier needs at least 2",
            fix="add sentences of other fields",
        )
    small = {label: len(s) for label, s in by_label.items() if len(s) < HELD_OUT_EVERY}
    if small:
        raise InputError(
            f"fields with fewer than {HELD_OUT_EVERY} sentences in {shown}: {small}",
            fix=f"give every field at least {HELD_OUT_EVERY} sentences (one is held out)",
        )
    train: list[Example] = []
    held_out: list[Example] = []
    for label, sentences in by_label.items():
        for index, sentence in enumerate(sentences, start=1):
            split = held_out if index % HELD_OUT_EVERY == 0 else train
            split.append(Example(sentence, label))
    return Corpus(
        labels=tuple(by_label),
        train=tuple(train),
        held_out=tuple(held_out),
        sha256=hashlib.sha256(data).hexdigest(),
    )
