"""A real HTTP listener for tests: answers every POST like a KServe v2 server and records the
headers that arrive (who got sent a token)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

V2_ANSWER = {
    "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["a"]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
    ],
    "parameters": {"labels": ["a"]},
}


class Recorder(ThreadingHTTPServer):
    """A listener that answers every POST like a v2 server and keeps the headers it got."""

    def __init__(self, host: str, port: int) -> None:
        self.headers: list[dict[str, str]] = []
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.headers.append(dict(self.headers.items()))
        body = json.dumps(V2_ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass
