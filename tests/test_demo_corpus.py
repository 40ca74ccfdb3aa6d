"""The demo's shipped corpus: enough distinct sentences per field, a clean fixed split; and the
parser's refusals of malformed corpora."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from scibert_pack.demo.corpus import HELD_OUT_EVERY, Corpus, load_corpus, parse_corpus
from scibert_pack.demo.run import DEMO_TEXTS
from scibert_pack.errors import InputError

FIELDS = (
    "biology",
    "chemistry",
    "physics",
    "medicine",
    "computer_science",
    "environmental_science",
)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_corpus()


def test_fields_in_file_order(corpus: Corpus) -> None:
    assert corpus.labels == FIELDS


def test_every_field_has_enough_sentences_in_both_splits(corpus: Corpus) -> None:
    train = Counter(e.label for e in corpus.train)
    held_out = Counter(e.label for e in corpus.held_out)
    for field in FIELDS:
        assert train[field] >= 48, field
        assert held_out[field] >= 12, field
        # every 5th sentence of a field is held out: a quarter as many as trained on
        assert held_out[field] == (train[field] + held_out[field]) // HELD_OUT_EVERY


def test_no_sentence_twice_and_none_in_both_splits(corpus: Corpus) -> None:
    everything = [e.text.casefold() for e in (*corpus.train, *corpus.held_out)]
    assert len(everything) == len(set(everything))
    assert not {e.text for e in corpus.train} & {e.text for e in corpus.held_out}


def test_demo_texts_are_not_in_the_corpus(corpus: Corpus) -> None:
    known = {e.text.casefold() for e in (*corpus.train, *corpus.held_out)}
    assert not [t for t in DEMO_TEXTS if t.casefold() in known]


def test_sentences_are_single_realistic_lines(corpus: Corpus) -> None:
    for e in (*corpus.train, *corpus.held_out):
        assert 4 <= len(e.text.split()) <= 25, e.text
        assert e.text[0].isupper() or e.text[0].isdigit(), e.text
        assert e.text.endswith("."), e.text


def test_held_out_is_every_fifth_of_each_field() -> None:
    data = "".join(
        f"a\tfirst field sentence {i}\nb\tsecond field sentence {i}\n" for i in range(1, 11)
    )
    corpus = parse_corpus(data.encode())
    assert [e.text for e in corpus.held_out] == [
        "first field sentence 5",
        "first field sentence 10",
        "second field sentence 5",
        "second field sentence 10",
    ]
    assert corpus.labels == ("a", "b")
    assert len(corpus.train) == 16


def test_comments_blank_lines_and_spacing_are_ignored() -> None:
    rows = "".join(f"x\t  one   {i}  \ny\ttwo {i}\n" for i in range(5))
    corpus = parse_corpus(f"# header\n\n{rows}".encode())
    assert corpus.train[0].text == "one 0"


def test_hash_follows_the_bytes() -> None:
    rows = "".join(f"x\tone {i}\ny\ttwo {i}\n" for i in range(5))
    assert parse_corpus(rows.encode()).sha256 != parse_corpus((rows + "x\tmore\n").encode()).sha256


_FIVE = "".join(f"x\tsentence {i}\n" for i in range(5))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            _FIVE + "y no tab here\n",
            "line 6 of corpus is not FIELD<TAB>SENTENCE: 'y no tab here'; write one field name, one tab, then the sentence",
            id="no-tab",
        ),
        pytest.param(
            _FIVE + "\tno field\n",
            "line 6 of corpus is not FIELD<TAB>SENTENCE: '\\tno field'; write one field name, one tab, then the sentence",
            id="empty-field",
        ),
        pytest.param(
            _FIVE + "y\t\n",
            "line 6 of corpus is not FIELD<TAB>SENTENCE: 'y\\t'; write one field name, one tab, then the sentence",
            id="empty-sentence",
        ),
        pytest.param(
            _FIVE + "y\tSentence 3\n",
            "line 6 of corpus repeats the sentence of line 4: 'Sentence 3'; remove the duplicate (it would leak between the splits)",
            id="duplicate-across-fields",
        ),
        pytest.param(
            _FIVE,
            "corpus has 1 field(s); a classifier needs at least 2; add sentences of other fields",
            id="one-field",
        ),
        pytest.param(
            _FIVE + "y\tonly one\n",
            "fields with fewer than 5 sentences in corpus: {'y': 1}; give every field at least 5 sentences (one is held out)",
            id="small-field",
        ),
    ],
)
def test_malformed_corpus_is_refused(data: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_corpus(data.encode())
    assert str(caught.value) == message


def test_not_utf8_is_refused() -> None:
    with pytest.raises(InputError, match=r"^corpus is not UTF-8 .*; save it as UTF-8$"):
        parse_corpus(b"x\t\xff\xfe\n")


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tsv"
    with pytest.raises(InputError) as caught:
        load_corpus(missing)
    assert str(caught.value) == (
        f"cannot read corpus {missing} (No such file or directory); "
        "pass a readable FIELD<TAB>SENTENCE file"
    )
