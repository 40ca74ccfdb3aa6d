"""A real HTTP listener for tests: answers every POST like a KServe v2 server and records the
headers that arrive (who got sent a token)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

V2_ANSWER = {
    "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["a"]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
    ],
    "parameters": {"labels": ["a"]},
}

REFUSED = {
    "code": 400,
    "type": "InvalidKeyException",
    "message": "Token Authorization failed. Token either incorrect, expired, or not provided "
    "correctly",
}


class Recorder(ThreadingHTTPServer):
    """A listener that answers every POST like a v2 server and keeps the headers it got."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        require_token: str | None = None,
        answer: dict[str, Any] | None = None,
    ) -> None:
        self.headers: list[dict[str, str]] = []
        self.answer = answer or V2_ANSWER
        # Refuse requests without this bearer token, as TorchServe 0.12 does (400, not 401).
        self.require_token = require_token
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.headers.append(dict(self.headers.items()))
        wanted = self.server.require_token
        refused = wanted is not None and self.headers.get("Authorization") != f"Bearer {wanted}"
        body = json.dumps(REFUSED if refused else self.server.answer).encode()
        self.send_response(400 if refused else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def recording(host: str, port: int, **options: Any) -> Iterator[Recorder]:
    """A Recorder answering on `host`:`port` for the block (Recorder's options)."""
    server = Recorder(host, port, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
