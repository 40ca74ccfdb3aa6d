"""Validation regexes match whole strings: `re.match` with a `$` anchor accepts a trailing
newline (`build --name $'tiny\\n'` once wrote `tiny\\n.mar`), so the code base uses fullmatch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scibert_pack.archiver.settings import NAME_PATTERN, VERSION_PATTERN

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "archiver",
    "config",
    "demo",
    "handlers",
    "kserve",
    "scibert_pack",
    "serving",
    "storage",
)
PREFIX_MATCH = re.compile(r"(\bre|\b_?[A-Z][A-Z0-9_]*|\bpattern)\.match\(")


def test_no_prefix_matching_regex_calls() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in PACKAGES
        for path in sorted((ROOT / package).glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PREFIX_MATCH.search(line)
    ]
    assert found == [], "use .fullmatch() (or re.fullmatch) for validation"


@pytest.mark.parametrize("pattern", [NAME_PATTERN, VERSION_PATTERN], ids=["name", "version"])
@pytest.mark.parametrize(
    "value", ["tiny\n", "tiny\r\n", "\ntiny"], ids=["lf", "crlf", "leading-lf"]
)
def test_newlines_never_match(pattern: re.Pattern[str], value: str) -> None:
    assert pattern.fullmatch(value) is None
