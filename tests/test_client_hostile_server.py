"""A hostile or broken server's answer is a ClientError naming it, never a Python exception.

The client reads answers from whatever --url points at: deeply nested JSON (RecursionError in
json), integers past Python's digit limit (ValueError) and JSON that is not an object must all
end as one clear error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scibert_pack.client.inference_client import InferenceClient, RequestFailed
from scibert_pack.errors import ClientError

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b'{"outputs": ' + b"9" * 5_000 + b"}"


class _Canned(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.answer: tuple[int, bytes] = (200, b"{}")
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Canned

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[_Canned]:
    canned = _Canned()
    thread = threading.Thread(target=canned.serve_forever, daemon=True)
    thread.start()
    try:
        yield canned
    finally:
        canned.shutdown()
        canned.server_close()


@pytest.mark.parametrize(
    ("status", "body", "error", "needle"),
    [
        (200, DEEP, ClientError, "answered 200 with a body that is not JSON"),
        (200, HUGE_INT, ClientError, "answered 200 with a body that is not JSON"),
        (200, b"[1, 2]", ClientError, "is not a scibert-pack v2 response"),
        (500, DEEP, RequestFailed, "answered 500: [[[["),
        (500, b"[1, 2]", RequestFailed, "answered 500: [1, 2]"),
        (500, b'{"error": "boom"}', RequestFailed, "answered 500: boom"),
    ],
    ids=["deep-200", "huge-int-200", "list-200", "deep-500", "list-500", "error-500"],
)
def test_a_hostile_answer_is_one_client_error(
    server: _Canned, status: int, body: bytes, error: type[Exception], needle: str
) -> None:
    server.answer = (status, body)
    client = InferenceClient(f"http://127.0.0.1:{server.server_address[1]}", "m", timeout_s=30)
    with pytest.raises(error) as raised:
        client.infer(["cells divide"])
    assert needle in str(raised.value)


@pytest.mark.parametrize(
    ("code", "body", "fix"),
    [
        (400, {"code": 400, "error": "n_steps must be between 1 and 500, got 100000"}, "pass --explain-steps as the message says"),
        (400, {"code": 400, "error": "target 'biolgy' is not a label of this model (labels: ...)"}, "pass --target as the message says"),
        (400, {"code": 400, "error": "text 0 is empty"}, "fix the request as the message says"),
        (404, {"code": 404, "message": "Model not found: m"}, "check --model-name (is 'm' the name the store serves?) and --url"),
        (503, {"code": 503, "message": "busy"}, "the server is busy or restarting its worker: retry in a moment"),
    ],
    ids=["n-steps-is-explain-steps", "target", "other-400", "404", "503"],
)  # fmt: skip
def test_a_refusal_is_told_in_the_clis_terms(code: int, body: dict[str, object], fix: str) -> None:
    import json

    import requests

    from scibert_pack.client.inference_client import _http_failure

    response = requests.Response()
    response.status_code = code
    response._content = json.dumps(body).encode()
    text, told = _http_failure("http://127.0.0.1:8085/v2/models/m/explain", response, "m")
    assert text.startswith(f"http://127.0.0.1:8085/v2/models/m/explain answered {code}: ")
    assert told == fix


def test_explain_shows_the_servers_note_and_an_unreached_tolerance() -> None:
    """What the server says about an explanation reaches the person reading the CLI."""
    from click.testing import CliRunner
    from support.http_recorder import recording

    from scibert_pack.cli import cli
    from scibert_pack.serving.ports import free_ports

    item = {
        "words": ["bio", "##avail"], "importances": [0.2, -0.1], "delta": 0.004,
        "label": "a", "target": "a", "truncated": False, "granularity": "pieces",
        "n_steps": 64, "tolerance": 0.001, "converged": False,
        "note": "word pieces, not words: this model's tokenizer is a slow (Python) tokenizer",
    }  # fmt: skip
    answer = {"outputs": [{"name": "explain", "datatype": "BYTES", "shape": [1], "data": [item]}]}
    (port,) = free_ports(1)
    with recording("127.0.0.1", port, answer=answer):
        result = CliRunner().invoke(
            cli, ["explain", "bioavailability", "--url", f"http://127.0.0.1:{port}", "--model", "m"]
        )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:3] == [
        "  label: a  target: a  delta: +0.004  steps: 64 (tolerance not reached: the most steps "
        "allowed ran out)",
        "  note: word pieces, not words: this model's tokenizer is a slow (Python) tokenizer",
    ]
