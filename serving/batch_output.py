"""The JSON-lines output of batch predictions, and resuming it after an interruption.

Each result is one `write` of a whole line followed by a flush, so a crash leaves at most a
partial last line; `ResumableOutput` cuts that line off and reports which rows are finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Protocol

from scibert_pack.errors import InputError


class ResultSink(Protocol):
    """Where result lines go; `finished` are the rows an earlier run already wrote."""

    @property
    def finished(self) -> frozenset[int]: ...

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def result_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


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

    def close(self) -> None:
        self._stream.flush()


class ResumableOutput:
    """Appends to `path`, keeping the finished rows an earlier run wrote there."""

    def __init__(self, path: Path, total_rows: int) -> None:
        self.path = path
        self._finished = _finished_rows(path, total_rows)
        try:
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

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _finished_rows(path: Path, total_rows: int) -> frozenset[int]:
    """Rows already in `path`; a partial or unreadable last line is cut off (a crash's trace)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return frozenset()
    except OSError as err:
        raise InputError(
            f"cannot read output file {path} to resume ({err.strerror})",
            fix="check its permissions, or choose another --output",
        ) from err
    rows: set[int] = set()
    good_end = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        if not line.strip():
            if not is_last:
                good_end += len(line) + 1
            continue
        row = _row_of(line)
        complete = not is_last  # only the final chunk lacks its newline
        if row is None or not complete:
            if number >= len(lines) - 1:  # the last line: partial write, rewrite it
                break
            raise InputError(
                f"output file {path} line {number} is not a predict result: {line[:80]!r}",
                fix="choose another --output, or delete the file to start over",
            )
        if row >= total_rows:
            raise InputError(
                f"output file {path} has a result for row {row} but the input has only "
                f"{total_rows} texts: it belongs to another input",
                fix="choose another --output, or delete the file to start over",
            )
        rows.add(row)
        good_end += len(line) + 1
    if good_end < len(data):
        with path.open("r+b") as file:
            file.truncate(good_end)
    return frozenset(rows)


def _row_of(line: bytes) -> int | None:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    row = record.get("row") if isinstance(record, dict) else None
    return row if isinstance(row, int) and not isinstance(row, bool) and row >= 0 else None
