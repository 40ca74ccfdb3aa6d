"""Storage test helpers: a handle on the S3 server, fake model stores, KServe's downloader, a
TCP proxy that stalls mid-transfer (to kill an upload at a known point), and a stand-in kubectl
that runs the PVC copy steps against a local folder. Fixtures built on them are in
tests/support/s3_fixtures.py."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

# Dummy values: moto accepts any; tests assert they never show up in output.
ACCESS_KEY_ID = "AKIASCIBERTPACKTEST1"
SECRET_ACCESS_KEY = "scibert-pack-test-secret-do-not-print"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_environ(endpoint: str, home: Path) -> dict[str, str]:
    """Environment for boto3 and kserve_storage: dummy keys, no ~/.aws, no instance metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def write_store(
    root: Path,
    *,
    model_version: str | None = "1.0",
    payload: bytes = b"weights" * 100,
    config: str = "inference_address=http://0.0.0.0:8085\nmodel_store=/mnt/models/model-store\n",
) -> Path:
    """A small but valid store: config.properties, a zip .mar with MAR-INF/MANIFEST.json and,
    with a model_version, a build-report.json listing both artifacts."""
    (root / "config").mkdir(parents=True)
    (root / "model-store").mkdir()
    (root / "config" / "config.properties").write_text(config, encoding="utf-8")
    mar = io.BytesIO()
    with zipfile.ZipFile(mar, "w", compression=zipfile.ZIP_STORED) as zf:
        manifest = {"model": {"modelName": "scibert", "modelVersion": model_version or "1.0"}}
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        zf.writestr("model.safetensors", payload)
    (root / "model-store" / "scibert.mar").write_bytes(mar.getvalue())
    if model_version is not None:
        artifacts = [
            {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for rel, data in (
                ("config/config.properties", config.encode("utf-8")),
                ("model-store/scibert.mar", mar.getvalue()),
            )
        ]
        report = {
            "schema": "scibert-pack/build-report/v1",
            "model_name": "scibert",
            "model_version": model_version,
            "archive": {"path": "model-store/scibert.mar", "format": "zip-store"},
            "artifacts": artifacts,
        }
        (root / "build-report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (symlinks followed, hidden files included) by relative path."""
    found = {}
    for dirpath, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return dict(sorted(found.items()))


_DOWNLOAD = (
    "import sys\n"
    "from kserve_storage import Storage\n"
    "sys.stdout.write(Storage.download(sys.argv[1], sys.argv[2]))\n"
)


def kserve_download(uri: str, dest: Path, timeout: float = 120.0) -> dict[str, bytes]:
    """What KServe's storage initializer puts in the model dir for `uri`.

    Run in a process of its own, as the initializer container runs it: `Storage.download` forks a
    multiprocessing pool for S3, and a fork of the multi-threaded pytest process (moto clients,
    proxies, server readers) can inherit a held lock and hang forever. Raises RuntimeError when the
    downloader fails, with its stderr."""
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _DOWNLOAD, uri, str(dest)],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kserve_storage could not download {uri}:\n{done.stderr[-3000:]}")
    return tree(Path(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else dest))


class StallingProxy:
    """A TCP proxy to an upstream port that forwards `limit` request bytes in total, then holds
    every connection open without forwarding, and sets `stalled`. A client killed while stalled
    has sent a known part of its upload and no more."""

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.port = free_port()
        self.stalled = threading.Event()
        self._upstream = upstream_port
        self._limit = limit
        self._sent = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        for sock in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, upstream]
            for src, dst, count in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, count), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        src.settimeout(0.2)
        while not self._closing.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if count:
                with self._lock:
                    allowed = max(0, self._limit - self._sent)
                    self._sent += len(data)
                data = data[:allowed]
                if self._sent >= self._limit:
                    self.stalled.set()
            try:
                if data:
                    dst.sendall(data)
            except OSError:
                return


# kubectl as the PVC copy steps use it: `apply -f -` and `wait`/`delete` do nothing, and
# `exec [-i] POD -- CMD...` runs CMD here (its stdin passed through), so what the steps do inside
# the copy pod happens to a local folder. Every call is logged, one line each.
_FAKE_KUBECTL = """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -n) shift 2;; *) break;; esac; done
verb=$1; shift
printf '%s\\n' "$verb" >> "$FAKE_KUBECTL_LOG"
case "$verb" in
  apply) cat > /dev/null;;
  wait|delete) ;;
  exec) while [ "$1" != "--" ]; do shift; done; shift; exec "$@";;
  *) echo "fake kubectl: no $verb" >&2; exit 2;;
esac
"""


@dataclass(frozen=True)
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str
    # The kubectl verbs the script called, in order.
    kubectl: list[str]


def run_with_fake_kubectl(script: str, workdir: Path) -> ScriptRun:
    """Run `script` with `sh -e` and the stand-in kubectl first on PATH."""
    bin_dir = workdir / "fake-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(_FAKE_KUBECTL, encoding="utf-8")
    kubectl.chmod(0o755)
    log = workdir / "kubectl.log"
    log.write_text("", encoding="utf-8")
    (workdir / "steps.sh").write_text(script, encoding="utf-8")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env["FAKE_KUBECTL_LOG"] = str(log)
    done = subprocess.run(
        ["sh", "-e", str(workdir / "steps.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return ScriptRun(done.returncode, done.stdout, done.stderr, log.read_text().split())
