"""Texts for batch predictions: one per line, a field of JSON lines, or a column of a CSV file.

Blank lines are skipped everywhere; a row's number is its position among the texts read.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Literal

from scibert_pack.errors import InputError

InputFormat = Literal["lines", "jsonl", "csv"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("lines", "jsonl", "csv")
_BY_SUFFIX: dict[str, InputFormat] = {
    ".txt": "lines",
    ".text": "lines",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


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


def read_texts(path: Path, fmt: InputFormat, field: str = "text") -> list[str]:
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
        texts = [line for line in content.splitlines() if line.strip()]
    elif fmt == "jsonl":
        texts = _jsonl_texts(path, content, field)
    else:
        texts = _csv_texts(path, content, field)
    if not texts:
        raise InputError(
            f"input file {path} holds no texts (read as {fmt})",
            fix="give a file with at least one text, or the right --format",
        )
    return texts


def _jsonl_texts(path: Path, content: str, field: str) -> list[str]:
    texts: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path} line {number} is not JSON ({err.msg}): {line[:80]!r}",
                fix="give one JSON object per line, or pass --format lines",
            ) from err
        if not isinstance(record, dict) or field not in record:
            found = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
            raise InputError(
                f"{path} line {number} has no {field!r} field (found: {found or 'nothing'})",
                fix="name the field holding the text with --text-field",
            )
        text = record[field]
        if not isinstance(text, str):
            raise InputError(
                f"{path} line {number}: field {field!r} is a {type(text).__name__}, not a string",
                fix="name the field holding the text with --text-field",
            )
        texts.append(text)
    return texts


def _csv_texts(path: Path, content: str, column: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    columns = reader.fieldnames or []
    if column not in columns:
        raise InputError(
            f"{path} has no column {column!r} (columns found: {', '.join(columns) or 'none'})",
            fix="name the column holding the text with --column",
        )
    return [row[column] for row in reader if (row.get(column) or "").strip()]
