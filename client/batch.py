"""Batch predictions and explanations: many texts, several per request, several requests at
once, results in input order.

Predictions: requests run on a small pool with a bounded window of work in flight; results are
written as soon as every row before them is written (out-of-order completions wait in a buffer).
Transient failures (no answer, 5xx) are retried with exponential backoff. A request the server
refuses (4xx), or that still fails with a 5xx after its retries, is bisected and its halves asked
again, down to single rows: one bad row (one that the server refuses, or that breaks the whole
request) gets an `error` record with the HTTP status and its neighbours their predictions (a 5xx
error record is asked again by a resumed run). No answer at all, or rows that keep failing alone
on the server with nothing answered between them, stop the run: the server is down.

Explanations: the texts are cut into requests the server accepts (it caps texts, and texts x
steps, per explain request) and the answers are put back together in input order.

The pool's threads are daemons and nothing waits for them when a run stops early: Ctrl-C or a
fatal failure returns at once instead of waiting up to the request timeout for requests still
in flight (their answers are dropped; a resumed run asks again).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from scibert_pack.client.batch_input import InputRow
from scibert_pack.client.batch_output import ResultSink, is_final, row_fields
from scibert_pack.client.inference_client import (
    InferenceClient,
    RequestFailed,
    ServedExplanation,
    ServedPrediction,
    ServerLimit,
)
from scibert_pack.errors import ClientError, InputError
from scibert_pack.handlers.settings import SettingsError, check_declared, option_problem, setting

# Rows failing alone with a 5xx, nothing answered in between, before a run stops (server down).
SERVER_DOWN_AFTER = 3
_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True)
class BatchSettings:
    concurrency: int = setting(8, "Requests in flight.", low=1, high=256)
    # The fastest of the sizes tried (BENCHMARKS.md, "Figures behind default settings").
    texts_per_request: int = setting(
        16, "Texts per request.", low=1, high=256, option="--batch-texts"
    )
    retries: int = setting(3, "Retries of a failed request.", low=0, high=20)
    backoff_s: float = 0.5  # first retry waits this long, then doubles

    def __post_init__(self) -> None:
        _check_declared(self)
        if self.backoff_s < 0:
            raise InputError(f"backoff {self.backoff_s} s is negative", fix="pass 0 or more")


@dataclass(frozen=True)
class BatchProgress:
    """Counts after some rows were written; `skipped` were finished by an earlier run;
    `server_errors` of the `errors` failed on the server (5xx): a rerun asks them again."""

    total: int
    skipped: int
    written: int
    errors: int
    retries: int
    elapsed_s: float
    server_errors: int = 0

    @property
    def done(self) -> int:
        return self.skipped + self.written

    @property
    def refused(self) -> int:
        return self.errors - self.server_errors

    @property
    def rows_per_s(self) -> float:
        return self.written / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _no_progress(_: BatchProgress) -> None:
    pass


@dataclass
class _Chunk:
    rows: list[int]
    sources: list[InputRow]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.sources]


class _DaemonPool(Generic[_In, _Out]):
    """A fixed set of daemon threads running `work` on submitted items.

    Unlike ThreadPoolExecutor (whose threads the interpreter joins at exit), nothing ever waits
    for these threads: `shutdown` cancels what has not started and returns at once.
    """

    def __init__(self, work: Callable[[_In], _Out], workers: int, name: str) -> None:
        self._work = work
        self._jobs: queue.SimpleQueue[tuple[Future[_Out], _In] | None] = queue.SimpleQueue()
        self._submitted: list[Future[_Out]] = []
        self._workers = workers
        for i in range(workers):
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True).start()

    def submit(self, item: _In) -> Future[_Out]:
        future: Future[_Out] = Future()
        self._submitted.append(future)
        self._jobs.put((future, item))
        return future

    def shutdown(self) -> None:
        for future in self._submitted:
            future.cancel()  # only those not started; running ones are left to finish alone
        for _ in range(self._workers):
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, item = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = self._work(item)
            except BaseException as err:  # handed to the caller through the future
                future.set_exception(err)
            else:
                future.set_result(result)


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
        self._lock = threading.Lock()
        self._server_failures = 0  # rows in a row that failed alone with a 5xx

    def run(self, rows: Sequence[InputRow], sink: ResultSink) -> BatchProgress:
        """Predict every row not in `sink.finished`; write each result line in row order."""
        start = self._clock()
        pending = [row for row in range(len(rows)) if row not in sink.finished]
        skipped = len(rows) - len(pending)
        written = errors = server_errors = 0
        buffered: dict[int, dict[str, Any]] = {}
        order = iter(pending)
        next_row = next(order, None)

        def report() -> BatchProgress:
            elapsed = self._clock() - start
            return BatchProgress(
                len(rows), skipped, written, errors, self._retries, elapsed, server_errors
            )

        chunks = self._chunks(rows, pending)
        window = 2 * self.settings.concurrency
        pool: _DaemonPool[_Chunk, list[dict[str, Any]]] = _DaemonPool(
            self._predict, self.settings.concurrency, "predict"
        )
        in_flight: set[Future[list[dict[str, Any]]]] = set()
        try:
            for chunk in _take(chunks, window):
                in_flight.add(pool.submit(chunk))
            while in_flight:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    for record in future.result():
                        buffered[record["row"]] = record
                for chunk in _take(chunks, len(finished)):
                    in_flight.add(pool.submit(chunk))
                flushed = 0
                while next_row is not None and next_row in buffered:
                    record = buffered.pop(next_row)
                    sink.write(record)
                    written += 1
                    errors += "error" in record
                    server_errors += not is_final(record)
                    flushed += 1
                    next_row = next(order, None)
                if flushed:
                    self.progress(report())
        finally:
            # Done, interrupted or failed: drop queued work and never wait for requests in
            # flight (an interruption must not hang for up to the request timeout).
            pool.shutdown()
        sink.finish()
        return report()

    def _chunks(self, rows: Sequence[InputRow], pending: list[int]) -> Iterator[_Chunk]:
        size = self.settings.texts_per_request
        for i in range(0, len(pending), size):
            numbers = pending[i : i + size]
            yield _Chunk(numbers, [rows[r] for r in numbers])

    def _predict(self, chunk: _Chunk) -> list[dict[str, Any]]:
        try:
            predictions = self._infer_with_retries(chunk.texts)
        except RequestFailed as err:
            if err.status is None:
                # No answer at all (connection refused, timeout): other rows would fail alike.
                raise self._gave_up(err) from err
            if _refuses_everything(err):
                raise
            if len(chunk.rows) > 1:
                # Refused (4xx) or failed (5xx, retries spent) as a whole: one bad row can sink
                # its request, so bisect and retry the halves; only the bad rows end up failing.
                half = len(chunk.rows) // 2
                return [
                    record
                    for rows, sources in (
                        (chunk.rows[:half], chunk.sources[:half]),
                        (chunk.rows[half:], chunk.sources[half:]),
                    )
                    for record in self._predict(_Chunk(rows, sources))
                ]
            self._failed_alone(err)
            return [
                {
                    **row_fields(chunk.rows[0], chunk.sources[0]),
                    "error": err.message,
                    "status": err.status,
                }
            ]
        self._answered()
        return [
            {
                **row_fields(row, source),
                "label": p.label,
                "probabilities": p.probabilities,
                "truncated": p.truncated,
            }
            for row, source, p in zip(chunk.rows, chunk.sources, predictions, strict=True)
        ]

    def _answered(self) -> None:
        with self._lock:
            self._server_failures = 0

    def _failed_alone(self, err: RequestFailed) -> None:
        """A row failed on its own. A 5xx is the server's fault or the row's; when rows keep
        failing alone with nothing answered in between, the server is down: stop, do not
        spend retries on every row of the input."""
        if is_final({"error": err.message, "status": err.status}):
            self._answered()  # a 4xx: the server is up, it refused this row
            return
        with self._lock:
            self._server_failures += 1
            down = self._server_failures >= SERVER_DOWN_AFTER
        if down:
            raise ClientError(
                f"{err.message} ({SERVER_DOWN_AFTER} rows in a row failed alone on the server "
                f"after {self.settings.retries} retries each, with nothing answered between "
                "them: the server looks down)",
                fix="check the server's logs, then rerun the same command: finished rows are "
                "kept and skipped",
            )

    def _infer_with_retries(self, texts: list[str]) -> list[ServedPrediction]:
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


def _check_declared(settings: object) -> None:
    try:
        check_declared(settings)
    except SettingsError as err:
        message, fix = option_problem(err, type(settings))
        raise InputError(message, fix=fix) from err


# --- explanations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainSettings:
    # The archive's default cap is 16 texts per explain request (max_explain_texts), and a cap
    # on texts x steps: 8 stays under both at the default 50 steps.
    texts_per_request: int = setting(
        8,
        "Texts per explain request: the server caps texts (max_explain_texts, 16 by default) "
        "and texts x steps per request.",
        low=1,
        high=256,
        option="--batch-texts",
    )
    concurrency: int = setting(1, "Explain requests in flight.", low=1, high=8)
    target: str | int | None = None
    n_steps: int | None = None
    merge_subwords: bool | None = None
    # The |convergence delta| to reach (the server's tolerance mode); None: the server's default.
    tolerance: float | None = None

    def __post_init__(self) -> None:
        _check_declared(self)


@dataclass(frozen=True)
class ExplainedTexts:
    """Per text, in input order: its explanation and (when asked) its prediction; and the
    server's v2 answers, one per explain request."""

    explanations: tuple[ServedExplanation, ...]
    predictions: tuple[ServedPrediction, ...] | None
    responses: tuple[dict[str, Any], ...]

    def merged_response(self) -> dict[str, Any]:
        """One v2 explain response for all the texts (the answers' outputs joined in order)."""
        first = self.responses[0]
        if len(self.responses) == 1:
            return first
        data = [item for r in self.responses for item in r["outputs"][0]["data"]]
        merged = {k: v for k, v in first.items() if k not in ("id", "outputs")}
        output = {**first["outputs"][0], "shape": [len(data)], "data": data}
        return {**merged, "outputs": [output]}


_Answer = tuple[list[ServedExplanation], list[ServedPrediction] | None, dict[str, Any]]


def explain_texts(
    client: InferenceClient,
    texts: Sequence[str],
    settings: ExplainSettings | None = None,
    *,
    with_predictions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExplainedTexts:
    """Explain any number of texts in requests of `settings.texts_per_request`.

    `with_predictions` also asks the infer route for each request's texts (the probabilities of
    every label). `progress(done, total)` runs after each request's answer, in input order.
    """
    settings = settings or ExplainSettings()
    size = settings.texts_per_request
    pieces = [list(texts[i : i + size]) for i in range(0, len(texts), size)]

    def ask(piece: list[str]) -> _Answer:
        try:
            explanations, body = client.explain(
                piece,
                target=settings.target,
                n_steps=settings.n_steps,
                merge_subwords=settings.merge_subwords,
                tolerance=settings.tolerance,
            )
        except RequestFailed as err:
            if err.status == 413:
                raise _too_large(err, len(piece)) from err
            raise
        predictions = client.infer(piece)[0] if with_predictions else None
        return explanations, predictions, body

    pool: _DaemonPool[list[str], _Answer] = _DaemonPool(ask, settings.concurrency, "explain")
    answers: list[_Answer] = []
    try:
        futures = [pool.submit(piece) for piece in pieces]
        for future in futures:
            answers.append(future.result())
            if progress is not None:
                progress(min(len(texts), len(answers) * size), len(texts))
    finally:
        pool.shutdown()
    predictions = [p for _, found, _ in answers for p in found or ()]
    return ExplainedTexts(
        explanations=tuple(e for found, _, _ in answers for e in found),
        predictions=tuple(predictions) if with_predictions else None,
        responses=tuple(body for _, _, body in answers),
    )


def _too_large(err: RequestFailed, texts: int) -> RequestFailed:
    noun = "text" if texts == 1 else "texts"
    message = (
        f"the server refused an explain request of {texts} {noun} as too large ({err.message})"
    )
    fitting = _texts_that_fit(err.limit, texts)
    if texts > 1 and fitting is not None and fitting >= 1:
        fix = f"pass --batch-texts {fitting} (or fewer) to stay within that limit"
    elif texts > 1 and fitting is None:
        fix = (
            f"pass a smaller --batch-texts (this request had {texts}): the archive caps the "
            "texts (max_explain_texts) and the texts x steps (max_explain_work) of one request"
        )
    else:
        fix = (
            "one text alone is over the server's limits: ask for fewer --explain-steps, "
            "or shorten it"
        )
    return RequestFailed(message, fix=fix, status=413)


def _texts_that_fit(limit: ServerLimit | None, texts: int) -> int | None:
    """The texts per request the server's limit allows, when its 413 body names one: the limit
    of max_explain_texts, or for max_explain_work (value = texts x steps) the limit over the
    steps each of the `texts` asked for."""
    if limit is None:
        return None
    if limit.name == "max_explain_texts":
        return limit.limit
    steps = limit.value // texts if texts > 0 else 0
    if limit.name == "max_explain_work" and steps > 0:
        return limit.limit // steps
    return None
