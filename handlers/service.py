"""The batch pipeline: parse every row, predict all texts at once, explain, render each reply.

One bad request never fails its neighbours: parse errors answer that request alone; if the shared
forward pass or a shared explanation fails, the requests are retried one by one so only the one
that breaks gets a 500.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import importlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .budget import ExplainBudget, Refusal
from .explain import (
    TOLERANCE_METHOD,
    ExplainJob,
    Explanation,
    explain,
    explain_to_tolerance,
    merge_words,
)
from .first_token import first_token_last_layer
from .metrics import (
    BATCHES_TOTAL,
    EXPLAIN_MS,
    EXPLAIN_STEPS,
    FORWARD_PASSES_TOTAL,
    INFERENCE_MS,
    REQUESTS_TOTAL,
    TEXTS_PER_BATCH,
    Metrics,
)
from .model import (
    Batch,
    Classifier,
    choose_device,
    load_pretrained,
    token_chunks,
)
from .oip_binary import HEADER_LENGTH, OutputSpec, select_outputs
from .oip_grpc import is_grpc_request
from .oip_reply import encode_reply, grpc_replies, header_lookup
from .packed import IdlePacker
from .protocol import (
    MissingBody,
    RawRow,
    Request,
    RequestError,
    bad_request,
    parse_request,
    request_route,
)
from .render import (
    ModelInfo,
    Prediction,
    reason_phrase,
    render_error,
    render_explanations,
    render_predictions,
)
from .settings import HandlerSettings
from .threads import CoreShare, cpu_pressure, usable_cpus, worker_threads

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
# TorchServe's own default when model-config.yaml has no responseTimeout.
DEFAULT_RESPONSE_TIMEOUT_S = 120.0
# Integration steps of the explanations that measure the rate when none was measured yet: few,
# so that calibrating costs a handful of passes (the fixed cost per call cancels out).
CALIBRATION_STEPS = 8
# The calibration's second explanation has this many times the steps of its first.
CALIBRATION_SPREAD = 4
# Bodies of a batch (bytes or characters) past which the worker returns free heap to the OS.
TRIM_AFTER_BYTES = 1 << 20
TRIM_DELAY_S = 0.5


@dataclass(frozen=True)
class Reply:
    """A request's answer. No free reason phrase: the status maps to a fixed one (render.py)."""

    status: int
    body: object
    # A v2 reply's requested outputs (binary or not); None for everything else.
    outputs: OutputSpec | None = None


@dataclass
class _Work:
    """Requests tokenized together: request index -> its texts' positions in `batch`."""

    requests: dict[int, Request]
    batch: Batch
    spans: dict[int, range]
    # Per text; None until explained for the texts the explaining model predicts in their
    # explanation's first pass (see explain.py).
    predictions: list[Prediction | None] = field(default_factory=list)
    # The forward pass: seconds and padded tokens, the explanation cost estimate's first rate
    # (none when every text is predicted by its explanation).
    forward_s: float = 0.0
    forward_tokens: int = 0


class ClassifierService:
    def __init__(
        self,
        classifier: Classifier,
        settings: HandlerSettings,
        info: ModelInfo,
        clock: Callable[[], float] = time.perf_counter,
        *,
        response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S,
    ) -> None:
        self.classifier = classifier
        self.settings = settings
        self.info = info
        self._clock = clock
        self.budget = ExplainBudget(response_timeout_s)
        self._after_large = False
        # When the batch being handled started: the tolerance ladder stops within its budget.
        self._started = 0.0
        # Explanations borrow idle sibling workers' CPUs (from_context sets it up).
        self.cores = CoreShare(None, 1, 1, torch.set_num_threads)
        self._slowdown = 1.0
        # Set while no batch is being answered: background work (IdlePacker) runs only then.
        self.idle = threading.Event()
        self.idle.set()
        self.packer: IdlePacker | None = None

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        settings: HandlerSettings,
        *,
        name: str = "model",
        version: str = "1.0",
        device: torch.device | None = None,
        response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S,
    ) -> ClassifierService:
        """A service over an already loaded model and tokenizer (the seam tests use)."""
        classifier = Classifier.create(model, tokenizer, settings, device or torch.device("cpu"))
        info = ModelInfo(name, version, classifier.labels)
        return cls(classifier, settings, info, response_timeout_s=response_timeout_s)

    @classmethod
    def from_context(cls, context: Any) -> ClassifierService:
        """Load what TorchServe's context points at: model_dir, the handler settings, the GPU."""
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        settings = HandlerSettings.from_mapping(yaml_config.get("handler"))
        threads = _threads(settings, yaml_config)
        torch.set_num_threads(threads)
        properties = context.system_properties
        model, tokenizer = load_pretrained(
            Path(properties["model_dir"]), allow_pickle=settings.allow_pickle
        )
        service = cls.from_model(
            model,
            tokenizer,
            settings,
            name=str(context.model_name),
            version=_model_version(getattr(context, "manifest", None)),
            device=choose_device(settings, properties.get("gpu_id")),
            response_timeout_s=_response_timeout(yaml_config),
        )
        if settings.lend_idle_cpus and settings.torch_threads == 0:  # explicit counts stay
            lock = CoreShare.sibling_lock()
            service.cores = CoreShare(
                lock, threads, usable_cpus(), torch.set_num_threads, pressure=cpu_pressure
            )
        # Before the int8 copy, which keeps it.
        if settings.trim_last_layer and first_token_last_layer(service.classifier.model):
            logger.info(
                "the last layer finishes for the first token only (the one the classifier "
                "reads); build --no-trim-last-layer turns this off"
            )
        if settings.runtime in ("onnx", "onnx-int8"):
            from .onnx_runtime import INT8_EXPLAINED_WITH, OnnxLogits, onnx_file

            path = Path(properties["model_dir"]) / onnx_file(settings.runtime)
            onnx = OnnxLogits.load(
                path,
                torch.get_num_threads(),
                device=settings.device,
                gpu_id=properties.get("gpu_id"),
            )
            service.classifier = dataclasses.replace(service.classifier, fast_logits=onnx)
            if settings.runtime == "onnx-int8":
                service.info = dataclasses.replace(service.info, explained_with=INT8_EXPLAINED_WITH)
        elif settings.runtime == "torch-int8":
            from .int8 import EXPLAINED_WITH, int8_logits

            int8 = int8_logits(service.classifier.model)
            service.classifier = dataclasses.replace(service.classifier, fast_logits=int8)
            service.info = dataclasses.replace(service.info, explained_with=EXPLAINED_WITH)
        elif settings.pack_weights:
            packer = IdlePacker(service.classifier.model, service.idle)
            if packer.layers:
                service.packer = packer
                packer.start()
        return service

    def handle(self, rows: Sequence[Mapping[str, Any]], context: Any) -> list[str | bytes]:
        """TorchServe's per-batch call: one JSON string (or binary reply) per row, statuses set
        on the context; failed gRPC requests as oip_reply.grpc_replies says."""
        raws = [_raw_row(row, idx, context) for idx, row in enumerate(rows)]
        self.idle.clear()
        try:
            with self.cores.busy():
                replies = self.run(raws, Metrics(getattr(context, "metrics", None)))
        finally:
            self.idle.set()
        # TorchServe's worker holds a batch until the next one arrives: its memory is free only
        # after that next batch, so trim after a large batch and after the one that follows it.
        large = sum(_body_size(raw.body) for raw in raws) >= TRIM_AFTER_BYTES
        if large or self._after_large:
            release_free_memory_soon()
        self._after_large = large
        replies = grpc_replies(raws, replies, self.info)
        for idx, reply in enumerate(replies):
            context.set_response_status(reply.status, reason_phrase(reply.status), idx)
            context.set_response_content_type(idx, JSON_CONTENT_TYPE)
        return [encode_reply(reply, idx, context) for idx, reply in enumerate(replies)]

    def run(self, raws: Sequence[RawRow], metrics: Metrics | None = None) -> list[Reply]:
        metrics = metrics or Metrics(None)
        metrics.count(BATCHES_TOTAL, 1)
        metrics.count(REQUESTS_TOTAL, len(raws))
        started = self._started = self._clock()
        replies: dict[int, Reply] = {}
        requests: dict[int, Request] = {}
        for idx, raw in enumerate(raws):
            try:
                requests[idx] = parse_request(raw, self.settings, self.info.labels)
            except RequestError as exc:
                replies[idx] = _error_reply(exc)
            except Exception as exc:  # one request's problem, never its batch's
                logger.exception("reading request %d failed", idx)
                replies[idx] = _error_reply(_unreadable(exc))
        # A batch with explanations borrows idle siblings' CPUs for all of its passes, the
        # prediction of its other texts included.
        explaining = any(r.action == "explain" for r in requests.values())
        with self.cores.all_cores() if explaining else contextlib.nullcontext(0) as threads:
            # The budget learns the pace of the worker's own share: work on borrowed CPUs counts
            # as if it had run on the share alone (perfect scaling, the slowest the share could
            # be), so later work without them is not underestimated.
            self._slowdown = max(1.0, threads / self.cores.share)
            try:
                works, failures = self._predict(requests, metrics) if requests else ([], {})
                replies.update(failures)
                for work in works:
                    replies.update(self._refuse_over_budget(work, started))
                    explanations, explain_failures = self._explain(work, metrics, skip=set(replies))
                    replies.update(explain_failures)
                    for idx in work.requests:
                        if idx not in replies:
                            replies[idx] = self._render(idx, work, explanations.get(idx))
            finally:
                self._slowdown = 1.0
        return [replies[idx] for idx in range(len(raws))]

    # -- prediction -------------------------------------------------------------------------

    def _predict(
        self, requests: Mapping[int, Request], metrics: Metrics
    ) -> tuple[list[_Work], dict[int, Reply]]:
        """All requests in one forward pass; if that fails, each request alone."""
        try:
            return [self._predict_together(requests, metrics)], {}
        except Exception:
            logger.exception("prediction failed for requests %s", sorted(requests))
        if len(requests) == 1:
            idx = next(iter(requests))
            return [], {idx: _internal_error("prediction", idx)}
        works: list[_Work] = []
        failures: dict[int, Reply] = {}
        for idx, request in requests.items():
            alone, failed = self._predict({idx: request}, metrics)
            works.extend(alone)
            failures.update(failed)
        return works, failures

    def _predict_together(self, requests: Mapping[int, Request], metrics: Metrics) -> _Work:
        spans: dict[int, range] = {}
        texts: list[str] = []
        for idx, request in requests.items():
            spans[idx] = range(len(texts), len(texts) + len(request.texts))
            texts.extend(request.texts)
        batch = self.classifier.tokenize(texts)
        # An explained text's prediction comes from its explanation's first pass when the model
        # that predicts is the one that explains (explain.py): this pass is for the others.
        explained_later = (
            set()
            if self.classifier.fast_logits is not None
            else {pos for idx, r in requests.items() if r.action == "explain" for pos in spans[idx]}
        )
        predicted = [pos for pos in range(batch.size) if pos not in explained_later]
        lengths = batch.lengths
        # Padded tokens per pass stay within max_batch_tokens; a usual batch is one chunk.
        chunks = [
            tuple(predicted[k] for k in chunk)
            for chunk in token_chunks(
                [lengths[p] for p in predicted], self.settings.max_batch_tokens
            )
        ]
        predictions: list[Prediction | None] = [None] * batch.size
        forward_s = 0.0
        if predicted:
            start = self._clock()
            probabilities = self.classifier.batch_probabilities(batch, chunks)
            forward_s = self._clock() - start
            metrics.gauge(INFERENCE_MS, forward_s * 1000.0, "ms")
            for pos in predicted:
                predictions[pos] = self._prediction(probabilities[pos], batch.truncated[pos])
        metrics.gauge(TEXTS_PER_BATCH, len(texts), "count")
        metrics.count(FORWARD_PASSES_TOTAL, len(chunks))
        padded = sum(len(c) * max(lengths[i] for i in c) for c in chunks if c)
        # The explanation cost estimate's rate is the share's (see run).
        forward_s *= self._slowdown
        return _Work(dict(requests), batch, spans, predictions, forward_s, padded)

    def _prediction(self, probabilities: torch.Tensor, truncated: bool) -> Prediction:
        labels = self.info.labels
        return Prediction(
            labels[int(probabilities.argmax())], tuple(float(p) for p in probabilities), truncated
        )

    # -- explanation ------------------------------------------------------------------------

    def _refuse_over_budget(self, work: _Work, started: float) -> dict[int, Reply]:
        """Explain requests that would keep the batch past its time budget, each refused.

        Before any explanation was measured the rate is the forward pass's, which a cold or
        busy worker inflates many times: when it would refuse a request, or when the batch had
        no forward pass (every text is explained), a short calibration explanation measures the
        real rate first, so no request is judged on a guess.
        """
        explain = [i for i, r in work.requests.items() if r.action == "explain"]
        if not explain:
            return {}
        costs = [self._token_steps(work, [idx]) for idx in explain]
        verdicts = self._admit(work, costs, started)
        if not self.budget.measured and (any(verdicts) or not work.forward_tokens):
            self._calibrate(work, explain)
            verdicts = self._admit(work, costs, started)
        return {
            idx: Reply(v.status, render_error(v.status, v.message))
            for idx, v in zip(explain, verdicts, strict=True)
            if v is not None
        }

    def _admit(self, work: _Work, costs: Sequence[int], started: float) -> list[Refusal | None]:
        rate = self.budget.rate(work.forward_s, work.forward_tokens)
        return self.budget.admit(costs, rate, self._clock() - started)

    def _calibrate(self, work: _Work, explaining: Sequence[int]) -> None:
        """Measure the explanation rate on the batch's shortest explain text: a few steps, then
        CALIBRATION_SPREAD times as many, so that their difference cancels the fixed cost."""
        lengths = work.batch.lengths
        pos = min((p for idx in explaining for p in work.spans[idx]), key=lengths.__getitem__)
        idx = next(i for i in explaining if pos in work.spans[i])
        target = self._target(work, idx, pos)
        _load_captum()
        timings: list[tuple[float, int]] = []
        ends: dict[int, tuple[float, float]] = {}  # the first run computes them: 2 more rows
        for steps, rows in (
            (CALIBRATION_STEPS, CALIBRATION_STEPS + 2),
            (CALIBRATION_STEPS * CALIBRATION_SPREAD, CALIBRATION_STEPS * CALIBRATION_SPREAD),
        ):
            job = ExplainJob((pos,), (target,), steps, steps, self.settings.max_explain_tokens)
            start = self._clock()
            try:
                (result,) = explain(self.classifier, work.batch, job, ends)
            except Exception:  # their own explanations will report it
                logger.exception("calibrating the explanation rate failed")
                return
            target = result.target
            timings.append(((self._clock() - start) * self._slowdown, lengths[pos] * rows))
        self.budget.calibrate(timings[0], timings[1])

    def _token_steps(self, work: _Work, group: Sequence[int]) -> int:
        """Rows x padded width x n_steps of explaining `group` together."""
        positions = [pos for idx in group for pos in work.spans[idx]]
        width = max(work.batch.lengths[pos] for pos in positions)
        return len(positions) * width * work.requests[group[0]].options.n_steps

    def _explain(
        self, work: _Work, metrics: Metrics, skip: set[int] | frozenset[int] = frozenset()
    ) -> tuple[dict[int, list[Explanation]], dict[int, Reply]]:
        """Explain the texts of every explain request, one Captum call per integration setting."""
        results: dict[int, list[Explanation]] = {}
        failures: dict[int, Reply] = {}
        for group in self._explain_groups(work, skip):
            try:
                results.update(self._explain_group(work, group, metrics))
                continue
            except Exception:
                logger.exception("batch explanation failed; retrying its requests one by one")
            for idx in group:
                try:
                    results.update(self._explain_group(work, [idx], metrics))
                except Exception:
                    logger.exception("explanation failed for request %d", idx)
                    failures[idx] = _internal_error("explanation", idx)
        return results, failures

    def _explain_groups(self, work: _Work, skip: set[int] | frozenset[int]) -> list[list[int]]:
        groups: dict[tuple[int, int, float | None], list[int]] = {}
        for idx, request in work.requests.items():
            if request.action == "explain" and idx not in skip:
                options = request.options
                key = (options.n_steps, options.internal_batch_size, options.tolerance)
                groups.setdefault(key, []).append(idx)
        return list(groups.values())

    def _explain_group(
        self, work: _Work, group: Sequence[int], metrics: Metrics
    ) -> dict[int, list[Explanation]]:
        options = work.requests[group[0]].options
        indices = [pos for idx in group for pos in work.spans[idx]]
        targets = [self._target(work, idx, pos) for idx in group for pos in work.spans[idx]]
        job = ExplainJob(
            tuple(indices),
            tuple(targets),
            options.n_steps,
            options.internal_batch_size,
            self.settings.max_explain_tokens,
        )
        endpoints: dict[int, tuple[float, float]] = {}
        predicted: dict[int, torch.Tensor] = {}
        _load_captum()  # its first import would count as explanation time
        start = self._clock()
        width = max(work.batch.lengths[pos] for pos in indices)
        if options.tolerance is None:
            results = explain(self.classifier, work.batch, job, endpoints, predicted)
            token_steps = self._token_steps(work, group)
        else:
            results = self._explain_to_tolerance(
                work, group, job, options.tolerance, endpoints, predicted
            )
            # Each text ran every rung up to its own: first + 2 first + ... + n = 2 n - first.
            token_steps = sum(width * (2 * e.n_steps - job.n_steps) for e in results)
        # The first pass of each text also held its two ends.
        token_steps += 2 * width * len(indices)
        for pos, probabilities in predicted.items():
            if work.predictions[pos] is None:
                work.predictions[pos] = self._prediction(probabilities, work.batch.truncated[pos])
        explained = dict(zip(indices, results, strict=True))
        elapsed = self._clock() - start
        self.budget.learn(elapsed * self._slowdown, token_steps)
        metrics.gauge(EXPLAIN_MS, elapsed * 1000.0, "ms")
        metrics.gauge(EXPLAIN_STEPS, max(e.n_steps for e in results), "count")
        return {
            idx: [self._finish(work, idx, pos, explained[pos]) for pos in work.spans[idx]]
            for idx in group
        }

    def _explain_to_tolerance(
        self,
        work: _Work,
        group: Sequence[int],
        job: ExplainJob,
        tolerance: float,
        endpoints: dict[int, tuple[float, float]],
        predicted: dict[int, torch.Tensor],
    ) -> list[Explanation]:
        """The ladder: each text's cap is the request's max_steps and its share of
        max_explain_work; a next rung runs only if the budget's estimate says it fits."""
        caps = [
            min(
                work.requests[idx].options.max_steps,
                self.settings.max_explain_work // len(work.spans[idx]),
            )
            for idx in group
            for _ in work.spans[idx]
        ]

        def may_continue(positions: tuple[int, ...], steps: int) -> bool:
            width = max(work.batch.lengths[pos] for pos in positions)
            rate = self.budget.rate(work.forward_s, work.forward_tokens)
            seconds = self.budget.overhead_s + len(positions) * width * steps * rate
            return self._clock() - self._started + seconds <= self.budget.budget_s

        rungs = dataclasses.replace(job, method=TOLERANCE_METHOD)
        return explain_to_tolerance(
            self.classifier, work.batch, rungs, tolerance, caps, may_continue, endpoints, predicted
        )

    def _target(self, work: _Work, idx: int, pos: int) -> int | None:
        """The request's target for this text, else its predicted class (None: predicted by
        its explanation's first pass)."""
        target = work.requests[idx].target(pos - work.spans[idx].start)
        if target is not None:
            return target
        prediction = work.predictions[pos]
        return None if prediction is None else self.info.labels.index(prediction.label)

    def _finish(self, work: _Work, idx: int, pos: int, explanation: Explanation) -> Explanation:
        request = work.requests[idx]
        batch = work.batch
        if not request.options.merge_subwords:
            return explanation
        text = request.texts[pos - work.spans[idx].start]
        word_ids = None if batch.word_ids is None else batch.word_ids[pos]
        offsets = None if batch.offsets is None else batch.offsets[pos]
        return merge_words(explanation, text, word_ids, offsets)

    # -- rendering --------------------------------------------------------------------------

    def _render(self, idx: int, work: _Work, explanations: list[Explanation] | None) -> Reply:
        request = work.requests[idx]
        try:
            predictions = [p for p in (work.predictions[pos] for pos in work.spans[idx]) if p]
            if len(predictions) != len(work.spans[idx]):
                raise RuntimeError("an explained text has no prediction")
            if request.action == "explain":
                assert explanations is not None
                body = render_explanations(request, predictions, explanations, self.info)
            else:
                body = render_predictions(request, predictions, self.info)
            body = select_outputs(body, request.outputs)
            json.dumps(body)
        except Exception:
            logger.exception("rendering the response of request %d failed", idx)
            return _internal_error("rendering the response", idx)
        return Reply(200, body, outputs=request.outputs)


def _error_reply(exc: RequestError) -> Reply:
    return Reply(exc.code, render_error(exc.code, exc.message, exc.limit))


def _unreadable(exc: Exception) -> RequestError:
    return bad_request(
        f"the request could not be read ({type(exc).__name__}); send well-formed JSON or UTF-8 "
        "text of ordinary size and nesting"
    )


def _internal_error(stage: str, idx: int) -> Reply:
    message = f"{stage} failed inside the model server for request {idx}; see the worker log"
    return Reply(500, render_error(500, message))


def _body_size(body: object) -> int:
    """Characters or bytes of a body as it arrived: text, bytes, or the strings inside JSON.

    Iterative: a decoded body may nest nearly as deep as the recursion limit.
    """
    size = 0
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            size += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return size


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc malloc_trim); a no-op elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_trim_timer: list[threading.Timer] = []


def release_free_memory_soon() -> None:
    """release_free_memory in a moment, on a timer thread (malloc_trim takes the arenas' locks).

    A batch of large bodies leaves tens of MB free but mapped in glibc's arenas, so a worker's
    RSS would stay near its peak long after; the batch's own objects are freed only after
    handle() returns, hence the delay.
    """
    if _trim_timer:
        _trim_timer.pop().cancel()
    timer = threading.Timer(TRIM_DELAY_S, release_free_memory)
    timer.daemon = True
    _trim_timer.append(timer)
    timer.start()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


def _load_captum() -> None:
    importlib.import_module("captum.attr")


def _raw_row(row: Mapping[str, Any], idx: int, context: Any) -> RawRow:
    key = "body" if "body" in row else "data"
    # TorchServe puts each body part's content type under a request "header" named like the part.
    part = context.get_request_header(idx, key)
    content_type = part.get("content-type") if isinstance(part, dict) else None
    if content_type is None:
        content_type = context.get_request_header(idx, "Content-Type")
    explain_header = context.get_request_header(idx, "explain")
    encoding = context.get_request_header(idx, "Content-Encoding")
    if encoding is None:
        encoding = context.get_request_header(idx, "content-encoding")
    # A form-encoded request arrives as its fields, without a body.
    body = row[key] if key in row else MissingBody(tuple(sorted(str(k) for k in row)))
    headers = context.get_all_request_header(idx) or {}
    return RawRow(
        body=body,
        content_type=content_type,
        explain=str(explain_header).lower() == "true",
        route=request_route(context.get_request_header(idx, "url_path"), explain_header),
        binary_header=header_lookup(headers, HEADER_LENGTH),
        grpc=is_grpc_request(headers, body),
        content_encoding=None if encoding is None else str(encoding),
    )


def _response_timeout(yaml_config: Mapping[str, Any]) -> float:
    """The model's responseTimeout (seconds) from model-config.yaml; TorchServe's default 120."""
    value = yaml_config.get("responseTimeout", DEFAULT_RESPONSE_TIMEOUT_S)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else DEFAULT_RESPONSE_TIMEOUT_S


def _threads(settings: HandlerSettings, yaml_config: Mapping[str, Any]) -> int:
    """torch threads for this worker: the setting, or (0) its share of the usable CPUs."""
    if settings.torch_threads > 0:
        return settings.torch_threads
    workers = yaml_config.get("minWorkers", 1)
    workers = workers if isinstance(workers, int) and workers > 0 else 1
    threads = worker_threads(workers, usable_cpus())
    logger.info("using %d torch threads (%d workers share the usable CPUs)", threads, workers)
    return threads


def _model_version(manifest: object) -> str:
    if isinstance(manifest, dict):
        model = manifest.get("model")
        if isinstance(model, dict) and model.get("modelVersion") is not None:
            return str(model["modelVersion"])
    return "1.0"
