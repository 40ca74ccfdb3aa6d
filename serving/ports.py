"""Free loopback ports for services started beside TorchServe (the demo's S3 server, benchmarks).

TorchServe's own ports are picked by `ServeSettings.on_free_ports()` / port 0 (serving/server.py).
"""

from __future__ import annotations

import contextlib
import socket

from scibert_pack.errors import StorageError


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports on `host`, none adjacent, so port+1 of each is free too
    (TorchServe's gRPC management listens on the gRPC inference port + 1)."""
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        for _ in range(count * 20):  # bounded: adjacent picks are rare
            if len(ports) == count:
                break
            s = stack.enter_context(socket.socket())
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if all(abs(port - p) > 1 for p in ports) and _free(host, port + 1):
                ports.append(port)
    if len(ports) < count:
        raise StorageError(
            f"found only {len(ports)} of {count} free ports on {host}",
            fix="free some ports (see `ss -ltn`) and rerun",
        )
    return ports


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
