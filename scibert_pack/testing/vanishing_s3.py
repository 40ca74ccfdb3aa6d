"""An S3 server that goes away mid-upload, for tests/test_faults.py and scripts/soak.py."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scibert_pack.demo.local_services import LocalS3Server
from scibert_pack.testing.s3_stores_and_proxies import S3Server, StallingProxy

CLI = [str(Path(sys.executable).parent / "scibert-pack")]


class Moto:
    """A moto S3 server this test owns: it can be killed and started again on the same port
    (the first start picks a free one)."""

    def __init__(self, log: Path) -> None:
        self._s3 = LocalS3Server(log, append=True)

    @property
    def port(self) -> int:
        return self._s3.port

    @property
    def server(self) -> S3Server:
        return S3Server(self._s3.endpoint)

    def start(self) -> None:
        self._s3.start()

    def kill(self) -> None:
        self._s3.kill()


@dataclass(frozen=True)
class VanishedUpload:
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # from the start of the upload to its exit
    endpoint: str  # what the upload was told to use


def upload_until_s3_vanishes(
    store: Path, uri: str, moto: Moto, env: dict[str, str], *, kill_moto: bool
) -> VanishedUpload:
    """Upload `store` through a proxy that passes 1 MiB and then holds every byte; then the
    S3 server goes away (kill_moto: the moto process is SIGKILLed too) and the proxy closes,
    which is what a vanished server looks like: open connections reset, new ones refused."""
    with StallingProxy(moto.port, limit=1 << 20) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        started = time.monotonic()
        upload = subprocess.Popen(
            [*CLI, "upload", str(store), uri, "--max-concurrency", "1", "--endpoint-url", endpoint],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            if not proxy.stalled.wait(timeout=60):
                raise AssertionError("the upload never got 1 MiB far")
            if kill_moto:
                moto.kill()
        except BaseException:
            upload.kill()
            upload.communicate(timeout=10)
            raise
    stdout, stderr = upload.communicate(timeout=120)
    return VanishedUpload(
        upload.returncode,
        stdout.decode(),
        stderr.decode(),
        time.monotonic() - started,
        endpoint,
    )
