"""Texts for batch predictions: one per line, a field of JSON lines, or a column of a CSV file.

A record whose text is empty or only whitespace (and a blank line) is skipped, and its line
number is reported in `BatchInput.skipped`; every row keeps the line of the input it starts on
(and the record's `id` field or column when it has one), so a skipped record never silently
shifts what a result refers to. A row's number (`row`) is its position among the texts read.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scibert_pack.errors import InputError
from scibert_pack.files import load_json

InputFormat = Literal["lines", "jsonl", "csv"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("lines", "jsonl", "csv")
ID_FIELD = "id"
_BY_SUFFIX: dict[str, InputFormat] = {
    ".txt": "lines",
    ".text": "lines",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


@dataclass(frozen=True)
class InputRow:
    """One text to classify. `line`: the 1-based line of the input file the record starts on
    (None for texts that come from no file); `id`: the record's own `id` field or column."""

    text: str
    line: int | None = None
    id: object = None


@dataclass(frozen=True)
class BatchInput:
    rows: tuple[InputRow, ...]
    # Lines of records skipped because their text is empty or whitespace (not blank lines).
    skipped: tuple[int, ...] = ()

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rows]


def rows_of(texts: list[str] | tuple[str, ...]) -> tuple[InputRow, ...]:
    """Rows for texts that come from no file (no line numbers, no ids)."""
    return tuple(InputRow(text) for text in texts)


def input_format(path: Path, chosen: InputFormat | None = None) -> InputFormat:
    """The format asked for, else the one the file's extension names."""
    if chosen is not None:
        return chosen
    found = _BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        known = ", ".join(f"{s} ({f})" for s, f in _BY_SUFFIX.items())
        raise InputError(
            f"cannot tell the format of {path} from its extension {path.suffix or '(none)'!r} "
            f"(known: {known})",
            fix="pass --format lines, jsonl or csv",
        )
    return found


def read_input(path: Path, fmt: InputFormat, field: str = "text") -> BatchInput:
    """Every text of the file, in order; `field` is the JSON key or the CSV column."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise InputError(f"input file {path} does not exist", fix="check --input") from err
    except UnicodeDecodeError as err:
        raise InputError(
            f"input file {path} is not UTF-8 text ({err.reason} at byte {err.start})",
            fix="convert it to UTF-8, e.g. iconv -t UTF-8",
        ) from err
    except OSError as err:
        raise InputError(
            f"cannot read input file {path} ({err.strerror})",
            fix="check the path and its permissions",
        ) from err
    if fmt == "lines":
        found = _lines(content)
    elif fmt == "jsonl":
        found = _jsonl(path, content, field)
    else:
        found = _csv(path, content, field)
    if not found.rows:
        raise InputError(
            f"input file {path} holds no texts (read as {fmt})",
            fix="give a file with at least one text, or the right --format",
        )
    return found


def _physical_lines(content: str) -> list[str]:
    """Lines as editors number them: split at \\n only (str.splitlines also splits at U+2028,
    form feeds and other separators that may sit inside a text or a JSON string)."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _collect(texts: Sequence[tuple[int, str, object]]) -> BatchInput:
    rows = tuple(InputRow(text, line, id_) for line, text, id_ in texts if text.strip())
    skipped = tuple(line for line, text, _ in texts if not text.strip())
    return BatchInput(rows, skipped)


def _lines(content: str) -> BatchInput:
    # A blank line is no record: it is neither sent nor reported.
    found = [(n, line, None) for n, line in enumerate(_physical_lines(content), 1) if line.strip()]
    return _collect(found)


def _jsonl(path: Path, content: str, field: str) -> BatchInput:
    found: list[tuple[int, str, object]] = []
    for number, line in enumerate(_physical_lines(content), start=1):
        if not line.strip():
            continue
        try:
            record = load_json(line)
        except ValueError as err:  # bad JSON, nested too deeply, a number past Python's limit
            reason = getattr(err, "msg", None) or str(err).partition(": value has")[0]
            raise InputError(
                f"{path} line {number} is not JSON we can read ({reason}): {line[:80]!r}",
                fix="give one JSON object per line, or pass --format lines",
            ) from None
        if not isinstance(record, dict) or field not in record:
            found_keys = (
                ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
            )
            raise InputError(
                f"{path} line {number} has no {field!r} field (found: {found_keys or 'nothing'})",
                fix="name the field holding the text with --text-field",
            )
        text = record[field]
        if not isinstance(text, str):
            raise InputError(
                f"{path} line {number}: field {field!r} is a {type(text).__name__}, not a string",
                fix="name the field holding the text with --text-field",
            )
        id_ = _checked_id(path, number, record.get(ID_FIELD))
        for name, value in ((f"field {field!r}", text), ("id", id_)):
            if isinstance(value, str) and not _is_unicode(value):
                raise InputError(
                    f"{path} line {number}: {name} holds a lone surrogate escape such as "
                    "\\ud800 (half of a UTF-16 pair), which is not a character and cannot be "
                    "written as UTF-8",
                    fix="fix the escape (a pair such as \\ud83d\\ude00, or the character "
                    "itself) or drop it",
                )
        found.append((number, text, id_))
    return _collect(found)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _checked_id(path: Path, number: int, value: object) -> object:
    """A record's id goes into every result line as it is: a string, a whole or finite number,
    a boolean or null. NaN and Infinity (which Python's JSON reader accepts) are not JSON, and an
    object or array could nest deeper than a result line can be written: both are refused."""
    if isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
        raise InputError(
            f"{path} line {number}: id {shown} is not a JSON number (NaN and Infinity are "
            "not JSON, and result lines must be strict JSON)",
            fix=f'give the id as a string, e.g. "id": "{shown}", or as a finite number',
        )
    if isinstance(value, (dict, list)):
        kind = "object" if isinstance(value, dict) else "array"
        raise InputError(
            f"{path} line {number}: id is a JSON {kind}; ids must be strings, numbers, "
            "booleans or null",
            fix="give each record a string or numeric id",
        )
    return value


def _csv(path: Path, content: str, column: str) -> BatchInput:
    reader = csv.reader(io.StringIO(content, newline=""))
    header: list[str] | None = None
    found: list[tuple[int, str, object]] = []
    end = 0  # the line the previous record ended on: a record starts on the next one
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not cells:
                continue  # a blank line
            if header is None:
                header = cells
                if column not in header:
                    raise InputError(
                        f"{path} has no column {column!r} "
                        f"(columns found: {', '.join(header) or 'none'})",
                        fix="name the column holding the text with --column",
                    )
                continue
            record = dict(zip(header, cells, strict=False))
            found.append((start, record.get(column) or "", record.get(ID_FIELD)))
    except csv.Error as err:
        raise InputError(
            f"{path}: the record that starts on line {end + 1} is not valid CSV ({err})",
            fix="check its quoting, or pass --format lines or jsonl",
        ) from err
    if header is None:
        raise InputError(
            f"{path} has no column {column!r} (columns found: none)",
            fix="name the column holding the text with --column",
        )
    return _collect(found)
