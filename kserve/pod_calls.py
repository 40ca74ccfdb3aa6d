"""The calls the kubelet and the ingress make to a pod: probes and the first requests.

Plain http.client with no proxy lookup (a proxy from the environment would swallow the pod
address) and timeouts on everything; run from inside the pod's network namespace.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from scibert_pack.files import load_json
from scibert_pack.kserve.pod_spec import Probe

BLOG_TEXT = "Risk assessment implications of site-specific oral relative bioavailability."
# The blog's v2 explain request as users copy it: shape -1 and `data` a JSON string
# (the blog prints its inner quotes unescaped; this is the JSON it means).
BLOG_EXPLAIN: dict[str, Any] = {
    "id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298",
    "inputs": [
        {
            "name": "4b7c7d4a-51e4-43c8-af61-04639f6ef4bc",
            "shape": -1,
            "datatype": "BYTES",
            "data": '{"text":"Risk assessment implications."}',
        }
    ],
}
V2_INFER: dict[str, Any] = {
    "id": "rehearsal-infer",
    "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [BLOG_TEXT]}],
}
V1_PREDICT: dict[str, Any] = {"instances": [BLOG_TEXT]}
V1_EXPLAIN: dict[str, Any] = {"instances": [{"text": BLOG_TEXT}]}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    # "HTTP 200", "connection refused", "timed out after 1 s", ...
    detail: str
    refused: bool = False


ExecRunner = Callable[[tuple[str, ...], float], tuple[int | None, str]]


def run_probe(probe: Probe, host: str, run_exec: ExecRunner | None = None) -> ProbeResult:
    """One probe the kubelet's way: httpGet passes on 200-399, tcpSocket on a connection,
    exec on exit code 0 (run inside the container by `run_exec`)."""
    if probe.kind == "exec" and run_exec is not None and probe.command:
        code, output = run_exec(probe.command, probe.timeout_s)
        last = output.strip().splitlines()[-1:] if output.strip() else []
        if code is None:
            return ProbeResult(False, f"exec timed out after {probe.timeout_s:g} s")
        return ProbeResult(code == 0, f"exec exit {code}" + (f": {last[0][:160]}" if last else ""))
    if probe.port is None or probe.kind not in ("httpGet", "tcpSocket"):
        return ProbeResult(False, f"{probe.kind} probes are not rehearsed")
    if probe.kind == "tcpSocket":
        try:
            with socket.create_connection((host, probe.port), timeout=probe.timeout_s):
                return ProbeResult(True, "connected")
        except ConnectionRefusedError:
            return ProbeResult(False, "connection refused", refused=True)
        except OSError as err:
            return ProbeResult(False, _describe(err, probe.timeout_s))
    try:
        status, body = _request("GET", host, probe.port, probe.path, None, probe.timeout_s)
    except ConnectionRefusedError:
        return ProbeResult(False, "connection refused", refused=True)
    except (OSError, http.client.HTTPException) as err:
        return ProbeResult(False, _describe(err, probe.timeout_s))
    text = body[:120].decode("utf-8", "replace").strip()
    return ProbeResult(200 <= status < 400, f"HTTP {status}" + (f": {text}" if text else ""))


@dataclass(frozen=True)
class Answer:
    route: str
    path: str
    status: int | None
    seconds: float
    body: Any
    # Why the answer is not what a client needs; None when it is.
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


Route = Literal["v2-infer", "v2-explain", "v1-predict", "v1-explain"]


def ingress_requests(protocol: str, model: str) -> list[tuple[Route, str, dict[str, Any]]]:
    if protocol == "v1":
        return [
            ("v1-explain", f"/v1/models/{model}:explain", V1_EXPLAIN),
            ("v1-predict", f"/v1/models/{model}:predict", V1_PREDICT),
        ]
    return [
        ("v2-explain", f"/v2/models/{model}/explain", BLOG_EXPLAIN),
        ("v2-infer", f"/v2/models/{model}/infer", V2_INFER),
    ]


def send(route: Route, host: str, port: int, path: str, payload: Any, timeout_s: float) -> Answer:
    started = time.monotonic()
    data = json.dumps(payload).encode()
    try:
        status, raw = _request("POST", host, port, path, data, timeout_s)
    except (OSError, http.client.HTTPException) as err:
        seconds = time.monotonic() - started
        return Answer(route, path, None, seconds, None, _describe(err, timeout_s))
    seconds = time.monotonic() - started
    try:
        body: Any = load_json(raw)
    except ValueError:
        body = raw[:2000].decode("utf-8", "replace")
    problem = None if status == 200 else f"HTTP {status}"
    if problem is None:
        problem = _check_body(route, body)
    return Answer(route, path, status, seconds, body, problem)


def ready_workers(host: str, port: int, model: str, timeout_s: float) -> int | None:
    """READY workers of `model` by TorchServe's management API; None when it cannot tell."""
    try:
        status, raw = _request("GET", host, port, f"/models/{model}", None, timeout_s)
        described = load_json(raw) if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    if not isinstance(described, list):
        return None
    workers = [
        worker
        for entry in described
        if isinstance(entry, dict) and isinstance(entry.get("workers"), list)
        for worker in entry["workers"]
    ]
    return sum(1 for w in workers if isinstance(w, dict) and w.get("status") == "READY")


def _check_body(route: Route, body: Any) -> str | None:
    """The shape a client relies on, checked loosely: an answer, not a golden value."""
    try:
        if route == "v2-infer":
            names = {o["name"] for o in body["outputs"]}
            return None if {"label", "probabilities"} <= names else f"outputs {sorted(names)}"
        if route == "v2-explain":
            item = body["outputs"][0]["data"][0]
        elif route == "v1-explain":
            item = body["explanations"][0]
        else:
            item = body["predictions"][0]
            return None if "label" in item else "no label in the prediction"
        if len(item["words"]) != len(item["importances"]) or not item["words"]:
            return "words and importances differ in length"
    except (KeyError, IndexError, TypeError) as err:
        return f"unexpected answer shape ({type(err).__name__}: {err})"
    return None


def _request(
    method: str, host: str, port: int, path: str, data: bytes | None, timeout_s: float
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(1 << 20)
    finally:
        connection.close()


def _describe(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return f"timed out after {timeout_s:g} s"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    return f"{type(err).__name__}: {err}"
