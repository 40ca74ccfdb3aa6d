"""The JSON-lines output of batch predictions, and resuming it after an interruption.

Each result is one `write` of a whole line followed by a flush, so a crash leaves at most a
partial last line; `ResumableOutput` cuts that line off and reports which rows are finished.

A record is finished when it holds a prediction, or an error the server gave for that text (a
4xx: asking again gets the same answer). An error from a failing server (5xx, or no answer at
all) is not: a resumed run asks again. Every kept record must describe the same input row it
did before (same text, line and id), else the output belongs to another input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from scibert_pack.client.batch_input import InputRow
from scibert_pack.errors import InputError
from scibert_pack.files import atomic_write_bytes, load_json

_START_OVER = "pass a new --output, or delete the file to start over"


class ResultSink(Protocol):
    """Where result lines go; `finished` are the rows an earlier run already wrote."""

    @property
    def finished(self) -> frozenset[int]: ...

    def write(self, record: dict[str, Any]) -> None: ...

    def finish(self) -> None:
        """Every row has its record: put them in input order if a resume left them out of it."""

    def close(self) -> None: ...


def result_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def is_final(record: dict[str, Any]) -> bool:
    """A prediction, or the server's refusal of that text (4xx); not a 5xx or a lost answer."""
    if "error" not in record:
        return True
    status = record.get("status")
    return isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 500


def row_fields(row: int, source: InputRow) -> dict[str, Any]:
    """The fields that tie a result to its input: row, line and id (when known), text."""
    fields: dict[str, Any] = {"row": row}
    if source.line is not None:
        fields["line"] = source.line
    if source.id is not None:
        fields["id"] = source.id
    fields["text"] = source.text
    return fields


class StreamOutput:
    """Results to an open text stream (stdout): no resume."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    @property
    def finished(self) -> frozenset[int]:
        return frozenset()

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(result_line(record))
        self._stream.flush()

    def finish(self) -> None:
        pass

    def close(self) -> None:
        self._stream.flush()


class ResumableOutput:
    """Appends to `path`, keeping the finished rows an earlier run wrote there.

    `retried` are the rows whose earlier record was a server failure: they were dropped from
    the file and are asked again; `kept_refused` counts the kept rows the server refused.
    """

    def __init__(self, path: Path, rows: Sequence[InputRow]) -> None:
        self.path = path
        kept = _read_kept(path, rows)
        self._finished = frozenset(kept.rows)
        self.retried = kept.retried
        self.kept_refused = kept.refused
        self._last_row = max(kept.rows, default=-1)
        self._out_of_order = False
        try:
            if kept.rewrite is not None:
                atomic_write_bytes(path, kept.rewrite)
            self._file = path.open("ab")
        except OSError as err:
            raise InputError(
                f"cannot write output file {path} ({err.strerror})",
                fix="check that its folder exists and is writable",
            ) from err

    @property
    def finished(self) -> frozenset[int]:
        return self._finished

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(result_line(record).encode("utf-8"))
        self._file.flush()
        row = int(record["row"])
        self._out_of_order |= row < self._last_row
        self._last_row = max(self._last_row, row)

    def finish(self) -> None:
        """Rows asked again after a resume were appended after later rows: sort the file."""
        if not self._out_of_order:
            return
        self._file.flush()
        lines = self.path.read_bytes().splitlines(keepends=True)
        lines.sort(key=lambda line: int(json.loads(line)["row"]))
        self._file.close()
        atomic_write_bytes(self.path, b"".join(lines))
        self._file = self.path.open("ab")
        self._out_of_order = False

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


class _Kept:
    def __init__(self) -> None:
        self.rows: dict[int, bytes] = {}  # finished row -> its line
        self.retried: frozenset[int] = frozenset()
        self.refused = 0  # kept rows whose record is the server's refusal (4xx)
        self.rewrite: bytes | None = None  # the file's new content, when lines are dropped


def _read_kept(path: Path, rows: Sequence[InputRow]) -> _Kept:
    """The finished records in `path`; a partial or unreadable last line is cut off (a crash's
    trace), server failures and repeated rows are dropped, a record of another input refused."""
    kept = _Kept()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return kept
    except OSError as err:
        raise InputError(
            f"cannot read output file {path} to resume ({err.strerror})",
            fix="check its permissions, or choose another --output",
        ) from err
    lines = data.split(b"\n")  # the last item is what follows the final newline: b"" or partial
    retried: set[int] = set()
    dropped = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            dropped |= number < len(lines)
            continue
        record = _record_of(line)
        if record is None or number == len(lines):
            if number >= len(lines) - 1:  # the last line: a partial write, redo its row
                dropped = True
                break
            raise InputError(
                f"output file {path} line {number} is not a predict result: {line[:80]!r}",
                fix=_START_OVER,
            )
        row = record["row"]
        _check_same_input(path, number, record, rows)
        if not is_final(record):
            retried.add(row)
            dropped = True
        elif row in kept.rows:
            dropped = True  # a second record of a finished row: keep the first
        else:
            kept.rows[row] = line + b"\n"
            kept.refused += "error" in record
    kept.retried = frozenset(retried - set(kept.rows))
    if dropped:
        kept.rewrite = b"".join(kept.rows[row] for row in sorted(kept.rows))
    return kept


def _record_of(line: bytes) -> dict[str, Any] | None:
    try:
        record = load_json(line)
    except ValueError:  # not JSON, not UTF-8, nested too deeply, a number past Python's limit
        return None
    if not isinstance(record, dict):
        return None
    row = record.get("row")
    if not isinstance(row, int) or isinstance(row, bool) or row < 0:
        return None
    if not isinstance(record.get("text"), str) or not ("label" in record or "error" in record):
        return None
    return record


def _check_same_input(
    path: Path, number: int, record: dict[str, Any], rows: Sequence[InputRow]
) -> None:
    row = record["row"]
    if row >= len(rows):
        raise InputError(
            f"output file {path} has a result for row {row} (line {number}) but the input has "
            f"only {len(rows)} texts: it belongs to another input",
            fix=_START_OVER,
        )
    expected = row_fields(row, rows[row])
    for key in ("text", "line", "id"):
        # A record without a line or id comes from a writer that did not record them.
        if (key == "text" or key in record) and record.get(key) != expected.get(key):
            where = f" (input line {rows[row].line})" if rows[row].line is not None else ""
            raise InputError(
                f"output file {path} line {number} holds row {row} with {key} "
                f"{_shown(record.get(key))}, but row {row} of the input{where} has {key} "
                f"{_shown(expected.get(key))}: the output belongs to another input, or the "
                "input changed since",
                fix=_START_OVER,
            )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
