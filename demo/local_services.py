"""What the demo runs beside TorchServe: a local S3-protocol server on a free loopback port.

The S3 server is moto's standalone server in its own process group, so stopping it (also on
Ctrl-C or an error, through the context manager) leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from scibert_pack.errors import InputError, StorageError
from scibert_pack.processes import stop_process_group
from scibert_pack.serving.ports import free_ports


class LocalS3Server:
    """`with LocalS3Server(log) as s3:` runs moto's S3 server on a free 127.0.0.1 port.

    The demo and the tests share it. `port` pins the port (a server started again after `kill()`
    comes back where its clients look); `append` keeps the log of earlier starts.
    """

    def __init__(
        self,
        log_file: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        append: bool = False,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.log_file = log_file
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.port = port
        self._append = append
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> LocalS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if importlib.util.find_spec("moto") is None:
            raise InputError(
                "the local S3 server of the demo needs moto, which is not installed",
                fix="pip install 'moto[server]' (scripts/demo.sh installs it with the dev extras)",
            )
        if not self.port:
            (self.port,) = free_ports(1, self.host)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab" if self._append else "wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise StorageError(
                    f"the local S3 server (moto) exited with code {self._process.returncode}: "
                    f"{self._log_tail()}",
                    fix=f"read {self.log_file}",
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise StorageError(
            f"the local S3 server (moto) did not listen on {self.endpoint} within "
            f"{self.start_timeout_s:.0f} s",
            fix=f"read {self.log_file}",
        )

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would (its buckets are gone)."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        self._stop(signal.SIGTERM)

    def _stop(self, first: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, 10.0, first=first)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, chars: int = 600) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-chars:].strip()
        except OSError:
            return "(no log)"
