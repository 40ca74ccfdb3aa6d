"""Batch predictions: many texts, several per request, several requests at once, results in order.

Requests run on a thread pool with a bounded window of work in flight; results are written as
soon as every row before them is written (out-of-order completions wait in a buffer). Transient
failures (no answer, 5xx) are retried with exponential backoff; a request the server refuses
(4xx) is split into single texts so that only the offending row gets an `error` record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from scibert_pack.errors import ClientError, InputError
from scibert_pack.serving.batch_output import ResultSink
from scibert_pack.serving.client import InferenceClient, Prediction, RequestFailed


@dataclass(frozen=True)
class BatchSettings:
    concurrency: int = 8
    texts_per_request: int = 16  # measured: 16 beat 1, 4 and 8 on MiniLM at concurrency 8
    retries: int = 3
    backoff_s: float = 0.5  # first retry waits this long, then doubles

    def __post_init__(self) -> None:
        for option, value, low, high in (
            ("--concurrency", self.concurrency, 1, 256),
            ("--batch-texts", self.texts_per_request, 1, 256),
            ("--retries", self.retries, 0, 20),
        ):
            if not low <= value <= high:
                raise InputError(
                    f"{option} {value} is out of range (expected {low} to {high})",
                    fix=f"pass {option} between {low} and {high}",
                )
        if self.backoff_s < 0:
            raise InputError(f"backoff {self.backoff_s} s is negative", fix="pass 0 or more")


@dataclass(frozen=True)
class BatchProgress:
    """Counts after some rows were written; `skipped` were finished by an earlier run."""

    total: int
    skipped: int
    written: int
    errors: int
    retries: int
    elapsed_s: float

    @property
    def done(self) -> int:
        return self.skipped + self.written

    @property
    def rows_per_s(self) -> float:
        return self.written / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _no_progress(_: BatchProgress) -> None:
    pass


@dataclass
class _Chunk:
    rows: list[int]
    texts: list[str]


class BatchPredictor:
    """Runs one batch job; `sleep` and `clock` are seams for tests."""

    def __init__(
        self,
        client: InferenceClient,
        settings: BatchSettings | None = None,
        *,
        progress: Callable[[BatchProgress], None] = _no_progress,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.client = client
        self.settings = settings or BatchSettings()
        self.progress = progress
        self._sleep = sleep
        self._clock = clock
        self._retries = 0

    def run(self, texts: Sequence[str], sink: ResultSink) -> BatchProgress:
        """Predict every row not in `sink.finished`; write each result line in row order."""
        start = self._clock()
        pending = [row for row in range(len(texts)) if row not in sink.finished]
        skipped = len(texts) - len(pending)
        written = errors = 0
        buffered: dict[int, dict[str, Any]] = {}
        order = iter(pending)
        next_row = next(order, None)

        def report() -> BatchProgress:
            return BatchProgress(
                len(texts), skipped, written, errors, self._retries, self._clock() - start
            )

        chunks = self._chunks(texts, pending)
        window = 2 * self.settings.concurrency
        executor = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="predict")
        in_flight: set[Future[list[dict[str, Any]]]] = set()
        try:
            for chunk in _take(chunks, window):
                in_flight.add(executor.submit(self._predict, chunk))
            while in_flight:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    for record in future.result():
                        buffered[record["row"]] = record
                for chunk in _take(chunks, len(finished)):
                    in_flight.add(executor.submit(self._predict, chunk))
                flushed = 0
                while next_row is not None and next_row in buffered:
                    record = buffered.pop(next_row)
                    sink.write(record)
                    written += 1
                    errors += "error" in record
                    flushed += 1
                    next_row = next(order, None)
                if flushed:
                    self.progress(report())
        finally:
            # An interruption or a fatal failure: drop queued work, keep what was written.
            executor.shutdown(wait=True, cancel_futures=True)
        return report()

    def _chunks(self, texts: Sequence[str], pending: list[int]) -> Iterator[_Chunk]:
        size = self.settings.texts_per_request
        for i in range(0, len(pending), size):
            rows = pending[i : i + size]
            yield _Chunk(rows, [texts[r] for r in rows])

    def _predict(self, chunk: _Chunk) -> list[dict[str, Any]]:
        try:
            predictions = self._infer_with_retries(chunk.texts)
        except RequestFailed as err:
            if err.retryable and err.status != 500:
                # No answer or a busy server: other rows would fail the same way.
                raise self._gave_up(err) from err
            if _refuses_everything(err):
                raise
            if len(chunk.rows) > 1:
                # Refused as a whole: ask text by text so that only the bad row fails.
                return [
                    record
                    for row, text in zip(chunk.rows, chunk.texts, strict=True)
                    for record in self._predict(_Chunk([row], [text]))
                ]
            return [{"row": chunk.rows[0], "text": chunk.texts[0], "error": err.message}]
        return [
            {
                "row": row,
                "text": p.text,
                "label": p.label,
                "probabilities": p.probabilities,
                "truncated": p.truncated,
            }
            for row, p in zip(chunk.rows, predictions, strict=True)
        ]

    def _infer_with_retries(self, texts: list[str]) -> list[Prediction]:
        attempt = 0
        while True:
            try:
                predictions, _ = self.client.infer(texts)
                return predictions
            except RequestFailed as err:
                if not err.retryable or attempt >= self.settings.retries:
                    raise
                self._retries += 1  # a race here only blurs a progress count
                self._sleep(self.settings.backoff_s * 2**attempt)
                attempt += 1

    def _gave_up(self, err: RequestFailed) -> ClientError:
        return ClientError(
            f"{err.message} (gave up after {self.settings.retries} retries)",
            fix="check the server, then rerun the same command: finished rows are kept and skipped",
        )


def _refuses_everything(err: RequestFailed) -> bool:
    """A wrong token, URL or model name: no row can succeed, so stop instead of marking them."""
    # TorchServe 0.12 answers a bad token with 400 InvalidKeyException, not 401.
    return err.status in (401, 403, 404) or "Token Authorization failed" in err.message


def _take(chunks: Iterator[_Chunk], count: int) -> list[_Chunk]:
    taken: list[_Chunk] = []
    for chunk in chunks:
        taken.append(chunk)
        if len(taken) == count:
            break
    return taken
