"""Closed-loop mixed load (infer with explains mixed in), worker RSS sampling and a leak check,
and a worker kill, for tests/test_soak.py, tests/test_faults.py and scripts/soak.py."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.serving.server import TorchServeProcess

# The soak's archive. One worker, so its RSS is the whole serving footprint the soak watches.
SOAK_SETTINGS = BuildSettings(
    name="tiny", profile="local", min_workers=1, max_workers=1, batch_size=8, max_batch_delay_ms=5
)
KILL_RESPONSE_TIMEOUT_S = 10
# The worker-kill archive. One worker: killing it fails everything in flight (with two, its twin
# answers).
KILL_SETTINGS = BuildSettings(
    name="tiny",
    profile="local",
    min_workers=1,
    max_workers=1,
    batch_size=8,
    max_batch_delay_ms=20,
    response_timeout_s=KILL_RESPONSE_TIMEOUT_S,
)

TEXTS = [
    "Risk assessment implications of site-specific oral relative bioavailability.",
    "the electron beam scatters from the crystal lattice at low temperature .",
    "the catalyst speeds up the reaction between the acid and the base .",
    "cells divide and the tissue grows under the microscope .",
]


def v2_body(text: str, request_id: str) -> bytes:
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}
    return json.dumps({"id": request_id, "inputs": [tensor]}).encode()


def workers(server: TorchServeProcess) -> list[dict[str, Any]]:
    """The model's workers as the management API describes them ([] while unreachable)."""
    url = f"{server.management_url}/models/{server.model_name}"
    try:
        described = requests.get(url, timeout=5).json()
    except (requests.RequestException, ValueError):
        return []
    return list(described[0].get("workers", [])) if described else []


def ready_pids(server: TorchServeProcess) -> list[int]:
    return sorted(int(w["pid"]) for w in workers(server) if w.get("status") == "READY")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc/PID/status (VmRSS, in kB)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"/proc/{pid}/status has no VmRSS")


@dataclass(frozen=True)
class Outcome:
    kind: str  # "infer" or "explain"
    status: str  # "200", "503", "connection error", "timeout"
    started: float  # monotonic seconds
    seconds: float
    correct: bool  # a 200 whose answer is the one for its text


@dataclass(frozen=True)
class RssSample:
    done: int  # requests answered (infer and explain) when the worker's RSS was read
    mib: float


@dataclass(frozen=True)
class RssBound:
    """How much the worker's RSS may still grow over the second half of a soak: a few MiB of
    allocator noise plus a small fraction of its size. Anything more is a leak."""

    slack_mib: float = 4.0
    fraction: float = 0.01

    def limit_mib(self, base_mib: float) -> float:
        return self.slack_mib + self.fraction * base_mib


@dataclass(frozen=True)
class RssVerdict:
    growth_mib: float  # over the second half, from a least-squares line through its samples
    limit_mib: float
    samples: int  # how many samples the second half had

    @property
    def ok(self) -> bool:
        return self.growth_mib <= self.limit_mib

    def __str__(self) -> str:
        verdict = "within" if self.ok else "OVER"
        return (
            f"RSS grew {self.growth_mib:+.2f} MiB over the second half ({self.samples} samples), "
            f"{verdict} the bound of {self.limit_mib:.2f} MiB"
        )


def second_half_growth(samples: Sequence[RssSample], bound: RssBound) -> RssVerdict:
    """The RSS growth over the second half of the requests: the slope of a least-squares line
    through that half's samples (one noisy reading cannot decide it alone) times its length."""
    if len(samples) < 4:
        raise ValueError(f"{len(samples)} RSS samples: too few to judge growth (need 4)")
    total = samples[-1].done
    half = [s for s in samples if 2 * s.done >= total]
    if len(half) < 2:
        raise ValueError(f"only {len(half)} RSS sample(s) in the second half: sample more often")
    xs = [float(s.done) for s in half]
    ys = [s.mib for s in half]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    growth = slope * (xs[-1] - xs[0])
    return RssVerdict(growth, bound.limit_mib(half[0].mib), len(half))


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed_s: float = 0.0
    rss_mib: dict[str, float] = field(default_factory=dict)  # "start", "middle", "end"
    rss_samples: list[RssSample] = field(default_factory=list)
    rss_check: RssVerdict | None = None

    def count(self, kind: str | None = None) -> int:
        return sum(1 for o in self.outcomes if kind is None or o.kind == kind)

    def errors(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes if o.status != "200" or not o.correct)

    def percentile_ms(self, q: float, kind: str = "infer") -> float:
        values = sorted(o.seconds for o in self.outcomes if o.kind == kind)
        if not values:
            return 0.0
        return values[min(len(values), max(1, math.ceil(q / 100 * len(values)))) - 1] * 1000

    def max_seconds(self) -> float:
        return max((o.seconds for o in self.outcomes), default=0.0)


class MixedLoad:
    """`concurrency` threads, each with its own keep-alive session, send requests back to back
    until `infer_total` infer requests are done or `max_seconds` pass; after every
    `explain_every` infers comes one explain, on top (20,000 infers, every 50th followed by an
    explain: 20,400 requests).

    Answers are checked against `expected` (text -> label) so a wrong answer counts as an error.
    `on_progress(done)` runs in a worker thread after each request (for RSS samples or faults).
    """

    def __init__(
        self,
        server: TorchServeProcess,
        *,
        infer_total: int,
        concurrency: int,
        explain_every: int,
        expected: dict[str, str],
        max_seconds: float,
        timeout_s: float = 60.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.server = server
        self.requests_total = infer_total + infer_total // explain_every
        self.concurrency = concurrency
        self.explain_every = explain_every
        self.expected = expected
        self.max_seconds = max_seconds
        self.timeout_s = timeout_s
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._claimed = 0
        self._done = 0
        self._stop = threading.Event()
        self.result = LoadResult()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> LoadResult:
        start = time.monotonic()
        threads = [
            threading.Thread(target=self._work, daemon=True) for _ in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Bounded: every request has its own timeout, and claims stop at max_seconds.
            thread.join(timeout=self.max_seconds + self.timeout_s + 30)
        self.result.elapsed_s = time.monotonic() - start
        return self.result

    def _claim(self, deadline: float) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._claimed >= self.requests_total:
                return None
            if time.monotonic() >= deadline:
                return None
            self._claimed += 1
            return self._claimed

    def _work(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        base = self.server.inference_url + f"/v2/models/{self.server.model_name}/"
        with requests.Session() as session:
            while (ticket := self._claim(deadline)) is not None:
                kind = "explain" if ticket % (self.explain_every + 1) == 0 else "infer"
                text = TEXTS[ticket % len(TEXTS)]
                outcome = self._send(session, base + kind, kind, text, ticket)
                with self._lock:
                    self.result.outcomes.append(outcome)
                    self._done += 1
                    done = self._done
                if self.on_progress is not None:
                    self.on_progress(done)

    def _send(
        self, session: requests.Session, url: str, kind: str, text: str, ticket: int
    ) -> Outcome:
        started = time.monotonic()
        headers = {"Content-Type": "application/json"}
        try:
            response = session.post(
                url, data=v2_body(text, str(ticket)), headers=headers, timeout=self.timeout_s
            )
        except requests.Timeout:
            return Outcome(kind, "timeout", started, time.monotonic() - started, False)
        except requests.ConnectionError:
            return Outcome(kind, "connection error", started, time.monotonic() - started, False)
        seconds = time.monotonic() - started
        if response.status_code != 200:
            return Outcome(kind, str(response.status_code), started, seconds, False)
        correct = _correct(response, kind, self.expected[text], ticket)
        return Outcome(kind, "200", started, seconds, correct)


def _correct(response: requests.Response, kind: str, expected: str, ticket: int) -> bool:
    try:
        body = response.json()
        if body["id"] != str(ticket):
            return False
        data = body["outputs"][0]["data"]
        label = data[0]["label"] if kind == "explain" else data[0]
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return bool(label == expected)


def expected_labels(server: TorchServeProcess) -> dict[str, str]:
    """Each load text's label, asked one at a time before any load."""
    url = server.inference_url + f"/v2/models/{server.model_name}/infer"
    found = {}
    for text in TEXTS:
        response = requests.post(url, data=v2_body(text, "probe"), timeout=60)
        response.raise_for_status()
        found[text] = response.json()["outputs"][0]["data"][0]
    return found


def soak(
    server: TorchServeProcess,
    *,
    infer_total: int,
    concurrency: int = 32,
    explain_every: int = 50,
    rss_every: int = 1000,
    warmup: int = 0,
    bound: RssBound | None = None,
    max_seconds: float = 900.0,
) -> LoadResult:
    """Mixed load with the worker's RSS read before, every `rss_every` requests and after,
    and judged by `bound` over the second half. `warmup` infers (with explains mixed in the
    same way) go first, unmeasured, so that caches filled on first use are not counted."""
    (pid,) = ready_pids(server)
    expected = expected_labels(server)
    if warmup:
        MixedLoad(
            server,
            infer_total=warmup,
            concurrency=concurrency,
            explain_every=explain_every,
            expected=expected,
            max_seconds=max_seconds,
        ).run()
    samples = [RssSample(0, rss_mib(pid))]
    lock = threading.Lock()

    def sample(done: int) -> None:
        if done % rss_every == 0:
            reading = RssSample(done, rss_mib(pid))
            with lock:
                samples.append(reading)

    load = MixedLoad(
        server,
        infer_total=infer_total,
        concurrency=concurrency,
        explain_every=explain_every,
        expected=expected,
        max_seconds=max_seconds,
        on_progress=sample,
    )
    result = load.run()
    done = result.count()
    samples = sorted((s for s in samples if s.done < done), key=lambda s: s.done)
    samples.append(RssSample(done, rss_mib(pid)))
    middle = min(samples, key=lambda s: abs(2 * s.done - done))
    result.rss_samples = samples
    result.rss_mib = {"start": samples[0].mib, "middle": middle.mib, "end": samples[-1].mib}
    result.rss_check = second_half_growth(samples, bound or RssBound())
    return result


@dataclass(frozen=True)
class KillReport:
    load: LoadResult
    old_pid: int
    new_pid: int
    killed_at: float  # monotonic
    recovered_at: float  # monotonic: the new worker was READY
    response_timeout_s: int

    @property
    def recovery_s(self) -> float:
        return self.recovered_at - self.killed_at

    def failed_during_outage(self) -> int:
        return sum(1 for o in self.load.outcomes if o.status != "200")

    def after_recovery(self) -> list[Outcome]:
        return [o for o in self.load.outcomes if o.started > self.recovered_at]


def kill_worker_under_load(
    server: TorchServeProcess,
    *,
    response_timeout_s: int,
    concurrency: int = 8,
    kill_after: int = 200,
    after_recovery: int = 300,
    max_seconds: float = 120.0,
) -> KillReport:
    """SIGKILL the Python worker once `kill_after` requests are answered, keep the load going
    until the restarted worker is READY and has answered `after_recovery` more, then stop."""
    (old_pid,) = ready_pids(server)
    expected = expected_labels(server)
    killed = threading.Event()
    marks: dict[str, float] = {}

    def fault(done: int) -> None:
        if done == kill_after and not killed.is_set():
            killed.set()
            marks["killed"] = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)

    load = MixedLoad(
        server,
        infer_total=10**9,
        concurrency=concurrency,
        explain_every=24,  # an explain every 25th request
        expected=expected,
        max_seconds=max_seconds,
        timeout_s=response_timeout_s + 30,
        on_progress=fault,
    )
    runner = threading.Thread(target=load.run, daemon=True)
    runner.start()
    new_pid = _wait_for_new_worker(server, old_pid, killed, deadline=time.monotonic() + max_seconds)
    marks["recovered"] = time.monotonic()
    while runner.is_alive() and time.monotonic() < marks["recovered"] + max_seconds:
        later = sum(1 for o in list(load.result.outcomes) if o.started > marks["recovered"])
        if later >= after_recovery:
            break
        time.sleep(0.05)
    load.stop()
    runner.join(timeout=response_timeout_s + 60)
    return KillReport(
        load.result,
        old_pid,
        new_pid,
        marks["killed"],
        marks["recovered"],
        response_timeout_s,
    )


def _wait_for_new_worker(
    server: TorchServeProcess, old_pid: int, killed: threading.Event, deadline: float
) -> int:
    while time.monotonic() < deadline:
        pids = ready_pids(server) if killed.is_set() else []
        fresh = [p for p in pids if p != old_pid]
        if fresh:
            return fresh[0]
        time.sleep(0.05)
    raise AssertionError(f"no READY worker replaced pid {old_pid}: {workers(server)}")
