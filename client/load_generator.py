"""A closed-loop load generator for a served model, in the spirit of `hey`.

N worker threads each send a request, wait for the answer, and send the next, until a request
count or a duration is reached. Each worker keeps its own keep-alive connection and uses the
standard library's http.client: the load generator usually shares the CPU with the server, and
http.client costs about a quarter of the CPU time per request that `requests` does.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scibert_pack.client.inference_client import checked_url
from scibert_pack.errors import InputError
from scibert_pack.files import load_json

BLOG_TEXT = "Risk assessment implications of site-specific oral relative bioavailability."
CONNECTION_ERROR = "connection error"
TIMEOUT = "timeout"
# With nothing answered yet, this many connection errors mean there is no server to load.
_GIVE_UP_UNANSWERED = 10
_KEPT_ERRORS = 5


def default_payload(texts: int = 1) -> dict[str, Any]:
    """A KServe v2 body holding the blog post's sentence `texts` times."""
    return {
        "id": "bench",
        "inputs": [
            {"name": "text", "shape": [texts], "datatype": "BYTES", "data": [BLOG_TEXT] * texts}
        ],
    }


def read_payload(path: Path) -> dict[str, Any]:
    """A JSON request body from a file (--payload)."""
    try:
        payload = load_json(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(
            f"cannot read payload file {path} ({err.strerror})", fix="check --payload"
        ) from err
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(
            f"payload file {path} is not JSON ({err})",
            fix="give a JSON request body, e.g. a KServe v2 infer request",
        ) from err
    if not isinstance(payload, dict):
        raise InputError(
            f"payload file {path} holds a JSON {type(payload).__name__}, not an object",
            fix='give a JSON object, e.g. {"inputs": [{"name": "text", ...}]}',
        )
    return payload


def texts_in(payload: Mapping[str, Any]) -> int:
    """Texts in a v2 body (its first input's data items); 1 for anything else."""
    try:
        data = payload["inputs"][0]["data"]
    except (KeyError, IndexError, TypeError):
        return 1
    return len(data) if isinstance(data, list) else 1


@dataclass(frozen=True)
class LoadSettings:
    url: str
    model: str
    concurrency: int = 8
    # Stop after this many requests, or after this many seconds; exactly one is set.
    requests: int | None = None
    duration_s: float | None = None
    explain: bool = False
    payload: Mapping[str, Any] = field(default_factory=default_payload)
    warmup_requests: int = 0  # sent before timing starts, not counted
    timeout_s: float = 60.0
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.requests is None) == (self.duration_s is None):
            raise InputError(
                "give either a request count or a duration, not both and not neither",
                fix="pass --requests N or --duration SECONDS",
            )
        if not 1 <= self.concurrency <= 1024:
            raise InputError(
                f"--concurrency {self.concurrency} is out of range (expected 1 to 1024)",
                fix="pass --concurrency between 1 and 1024",
            )
        if self.requests is not None and self.requests < 1:
            raise InputError(f"--requests {self.requests} is below 1", fix="pass 1 or more")
        if self.duration_s is not None and not 0 < self.duration_s <= 86_400:
            raise InputError(
                f"--duration {self.duration_s} is out of range (expected 0 to 86400 s)",
                fix="pass a positive number of seconds",
            )
        if self.warmup_requests < 0:
            raise InputError(f"--warmup {self.warmup_requests} is negative", fix="pass 0 or more")

    @property
    def endpoint(self) -> str:
        action = "explain" if self.explain else "infer"
        return f"{self.url.rstrip('/')}/v2/models/{self.model}/{action}"

    @property
    def path(self) -> str:
        return urlsplit(self.endpoint).path


Connect = Callable[[str, float], http.client.HTTPConnection]


def connect(url: str, timeout_s: float) -> http.client.HTTPConnection:
    """A keep-alive connection to the server of `url` (http or https)."""
    parts = urlsplit(checked_url(url))
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname or "", parts.port, timeout=timeout_s)  # checked: has a host


@dataclass(frozen=True)
class LoadReport:
    url: str
    concurrency: int
    texts_per_request: int
    requests: int  # sent and finished (answered or failed)
    ok: int  # answered 200
    elapsed_s: float
    # Latency of every answered request (any status), in ms.
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int]  # "200", "503", "connection error", "timeout" -> count
    errors: list[str]  # the first few distinct failure messages
    stopped_early: str | None = None

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def texts_per_s(self) -> float:
        return self.requests_per_s * self.texts_per_request

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "concurrency": self.concurrency,
            "texts_per_request": self.texts_per_request,
            "requests": self.requests,
            "ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 4),
            "requests_per_s": round(self.requests_per_s, 3),
            "texts_per_s": round(self.texts_per_s, 3),
            "latency_ms": {
                "p50": round(self.p50_ms, 3),
                "p90": round(self.p90_ms, 3),
                "p99": round(self.p99_ms, 3),
                "max": round(self.max_ms, 3),
                "mean": round(self.mean_ms, 3),
            },
            "statuses": dict(self.statuses),
            "errors": list(self.errors),
            "stopped_early": self.stopped_early,
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (the value at or below which q% of the values fall)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    claimed: int = 0
    finished: int = 0
    stop: str | None = None


def _no_progress(_: str) -> None:
    pass


class LoadRunner:
    """Runs one load test; `connect` (the transport) and `clock` are seams for tests."""

    def __init__(
        self,
        settings: LoadSettings,
        *,
        connect: Connect = connect,
        clock: Callable[[], float] = time.perf_counter,
        progress: Callable[[str], None] = _no_progress,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self._clock = clock
        self._progress = progress
        self._lock = threading.Lock()
        self._body = json.dumps(settings.payload).encode("utf-8")
        self._headers = {"Content-Type": "application/json"}
        if settings.token:
            self._headers["Authorization"] = f"Bearer {settings.token}"

    def run(self) -> LoadReport:
        s = self.settings
        self._connect(s.url, s.timeout_s).close()  # a bad URL fails here, before any thread
        if s.warmup_requests:
            self._progress(f"warming up: {s.warmup_requests} requests")
            warm = _Connection(self._connect, s.url, s.timeout_s)
            for _ in range(s.warmup_requests):
                self._send(warm)
            warm.close()
        tally = _Tally()
        self._progress(
            f"{s.concurrency} workers on {s.endpoint} for "
            + (f"{s.requests} requests" if s.requests else f"{s.duration_s:g} s")
        )
        start = self._clock()
        deadline = start + s.duration_s if s.duration_s is not None else None
        workers = [
            threading.Thread(target=self._work, args=(tally, deadline), daemon=True)
            for _ in range(s.concurrency)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = self._clock() - start
        latencies = sorted(tally.latencies_ms)
        return LoadReport(
            url=s.endpoint,
            concurrency=s.concurrency,
            texts_per_request=texts_in(s.payload),
            requests=tally.finished,
            ok=tally.statuses.get("200", 0),
            elapsed_s=elapsed,
            p50_ms=percentile(latencies, 50),
            p90_ms=percentile(latencies, 90),
            p99_ms=percentile(latencies, 99),
            max_ms=latencies[-1] if latencies else 0.0,
            mean_ms=sum(latencies) / len(latencies) if latencies else 0.0,
            statuses=dict(sorted(tally.statuses.items())),
            errors=tally.errors,
            stopped_early=tally.stop,
        )

    def _work(self, tally: _Tally, deadline: float | None) -> None:
        connection = _Connection(self._connect, self.settings.url, self.settings.timeout_s)
        try:
            while self._claim(tally, deadline):
                status, latency_ms, error = self._send(connection)
                self._record(tally, status, latency_ms, error)
        finally:
            connection.close()

    def _claim(self, tally: _Tally, deadline: float | None) -> bool:
        with self._lock:
            if tally.stop is not None:
                return False
            if deadline is not None and self._clock() >= deadline:
                return False
            if self.settings.requests is not None and tally.claimed >= self.settings.requests:
                return False
            tally.claimed += 1
            return True

    def _send(self, connection: _Connection) -> tuple[str, float | None, str | None]:
        begin = self._clock()
        try:
            status, body = connection.post(self.settings.path, self._body, self._headers)
        except TimeoutError:
            return TIMEOUT, None, f"no answer within {self.settings.timeout_s:g} s"
        except (OSError, http.client.HTTPException) as err:
            return CONNECTION_ERROR, None, f"cannot connect to {self.settings.url}: {_reason(err)}"
        latency_ms = (self._clock() - begin) * 1000
        if status == 200:
            return "200", latency_ms, None
        return str(status), latency_ms, f"{status}: {_detail(body)}"

    def _record(
        self, tally: _Tally, status: str, latency_ms: float | None, error: str | None
    ) -> None:
        with self._lock:
            tally.finished += 1
            tally.statuses[status] += 1
            if latency_ms is not None:
                tally.latencies_ms.append(latency_ms)
            if error and error not in tally.errors and len(tally.errors) < _KEPT_ERRORS:
                tally.errors.append(error)
            unanswered = tally.statuses[CONNECTION_ERROR] + tally.statuses[TIMEOUT]
            if unanswered >= _GIVE_UP_UNANSWERED and unanswered == tally.finished:
                tally.stop = f"stopped after {unanswered} requests without any answer"


class _Connection:
    """One worker's keep-alive connection, reopened after a failure."""

    def __init__(self, connect: Connect, url: str, timeout_s: float) -> None:
        self._connect = connect
        self._url = url
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = self._connect(self._url, self._timeout_s)
        try:
            self._conn.request("POST", path, body, headers)
            response = self._conn.getresponse()
            return response.status, response.read()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _reason(err: Exception) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, http.client.RemoteDisconnected):
        return "server closed the connection"
    return err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__


def _detail(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    try:
        decoded = load_json(text)
    except ValueError:
        return text.strip()[:200] or "(empty body)"
    if isinstance(decoded, dict):
        return str(decoded.get("error") or decoded.get("message") or decoded)[:200]
    return str(decoded)[:200]
