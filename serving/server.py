"""Runs TorchServe on a built model store and tells when the model's workers are ready.

Each server gets its own run folder: TorchServe keeps a pid file in $TMPDIR (a second server
would refuse to start), writes key_file.json and logs/ into its working directory and unpacks
archives into java.io.tmpdir ($TEMP). Isolating these lets several servers run side by side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from scibert_pack.config import properties
from scibert_pack.config.properties import Ports
from scibert_pack.errors import InputError, PortInUseError, ServeError
from scibert_pack.files import load_json
from scibert_pack.processes import stop_process_group
from scibert_pack.progress import ProgressSink, silent
from scibert_pack.serving.run_dir import (
    default_run_dir,
    open_private,
    secure_run_dir,
    tighten,
    write_private,
)
from scibert_pack.serving.store import ModelStore, open_store

KEY_FILE = "key_file.json"
# Which server a run folder's key file belongs to: host, port and pid (see ServingRecord).
SERVING_RECORD = "serving.json"
# All a run folder holds; a folder with anything else is not one (and is not cleaned up).
_RUN_DIR_NAMES = frozenset(
    {KEY_FILE, SERVING_RECORD, "config.properties", "torchserve.out", "logs", "tmp"}
)
# Ports picked for 0 are free when picked, but another process can take one in the seconds before
# TorchServe's JVM binds it (a client's outgoing connection is enough): a start that lost one is
# retried on newly picked ports, this many starts in all.
PORT_RACE_ATTEMPTS = 3
_PORT_OPTIONS = {
    "port": "--inference-port",
    "management_port": "--management-port",
    "metrics_port": "--metrics-port",
    "grpc_port": "--grpc-port",
}


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = Ports.inference
    management_port: int = Ports.management
    metrics_port: int = Ports.metrics
    grpc_port: int = Ports.grpc_inference  # gRPC management listens on the next port
    run_dir: Path | None = None  # default: default_run_dir(port)
    ready_timeout_s: float | None = None  # default: the model's startupTimeout + 60 s
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, option in _PORT_OPTIONS.items():
            value = getattr(self, name)
            high = 65_534 if name == "grpc_port" else 65_535  # gRPC management takes port + 1
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise InputError(
                    f"{option} {value!r} is not a port",
                    fix=f"pass a port from 1 to {high}, or 0 for a free one",
                )

    @classmethod
    def on_free_ports(cls, *, host: str = "127.0.0.1", **settings: Any) -> ServeSettings:
        """Settings with every port 0: `TorchServeProcess` picks free ones on `host` when it is
        created (see with_free_ports), as `scibert-pack serve --port 0` does."""
        return cls(host=host, port=0, management_port=0, metrics_port=0, grpc_port=0, **settings)

    def ports(self) -> dict[str, int]:
        return {
            "inference": self.port,
            "management": self.management_port,
            "metrics": self.metrics_port,
            "gRPC inference": self.grpc_port,
            "gRPC management": self.grpc_port + 1,
        }

    def url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"


def with_free_ports(settings: ServeSettings) -> ServeSettings:
    """`settings` with every port given as 0 replaced by a free one on its host (and for gRPC,
    one whose next port is free too: gRPC management listens there)."""
    wanted = [name for name in _PORT_OPTIONS if getattr(settings, name) == 0]
    if not wanted:
        return settings
    host = settings.host.strip("[]")
    family = _address_family(host)
    given = [getattr(settings, n) for n in _PORT_OPTIONS if getattr(settings, n)]
    taken = {*given, *([settings.grpc_port + 1] if settings.grpc_port else [])}
    picked: dict[str, int] = {}
    with contextlib.ExitStack() as held:  # held open, so no port is handed out twice
        for name in wanted:
            for _ in range(100):  # bounded: collisions are rare
                s = held.enter_context(socket.socket(family))
                s.bind((host, 0))
                port = int(s.getsockname()[1])
                if port in taken:
                    continue
                if name == "grpc_port":
                    if port + 1 in taken or port >= 65_535 or not _bindable(family, host, port + 1):
                        continue
                    taken.add(port + 1)
                taken.add(port)
                picked[name] = port
                break
            else:
                raise PortInUseError(
                    f"found no free port on {settings.host} for {_PORT_OPTIONS[name]} 0",
                    fix="free some ports (see `ss -ltn`) or pass the port explicitly",
                )
    return dataclasses.replace(settings, **picked)  # type: ignore[arg-type]  # port fields


def _address_family(host: str) -> socket.AddressFamily:
    """IPv6 for a host with a colon (bracketed or not), else IPv4."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class TorchServeProcess:
    """`with TorchServeProcess(store_dir, settings) as server:` starts, waits ready, stops."""

    def __init__(
        self,
        store_dir: Path,
        settings: ServeSettings | None = None,
        *,
        progress: ProgressSink = silent,
    ) -> None:
        self.store: ModelStore = open_store(store_dir)
        self._requested = settings or ServeSettings()
        self._pick_ports()
        self.progress = progress
        self._process: subprocess.Popen[bytes] | None = None

    # URLs -------------------------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        return self.settings.url(self.settings.port)

    @property
    def management_url(self) -> str:
        return self.settings.url(self.settings.management_port)

    @property
    def metrics_url(self) -> str:
        return self.settings.url(self.settings.metrics_port)

    @property
    def model_name(self) -> str:
        return self.store.model_name

    @property
    def pid(self) -> int | None:
        """The launcher's pid, which is also the process group of java and its workers."""
        return self._process.pid if self._process is not None else None

    @property
    def key_file(self) -> Path:
        return self.run_dir / KEY_FILE

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    # lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> TorchServeProcess:
        for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
            try:
                self.start()
                self.wait_ready()
                return self
            except ServeError as exc:
                self.stop()
                if attempt == PORT_RACE_ATTEMPTS or not self._lost_a_picked_port(exc):
                    raise
            except BaseException:
                self.stop()
                raise
            self.progress(
                "a port picked for TorchServe was taken before it could listen there; "
                "starting again on other free ports"
            )
            self._pick_ports()
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pick_ports(self) -> None:
        """Ports given as 0 are picked now, so the run folder is named by the real port."""
        self.settings = with_free_ports(self._requested)
        self.run_dir = self.settings.run_dir or default_run_dir(self.settings.port)

    def _lost_a_picked_port(self, exc: ServeError) -> bool:
        """Whether the start failed on a port in use that was picked for 0 (the ports given
        explicitly are still free: picking again would not help with those)."""
        if not isinstance(exc, PortInUseError) and "Address already in use" not in exc.message:
            return False
        given = [getattr(self._requested, name) for name in _PORT_OPTIONS]
        if 0 not in given:
            return False
        host = self.settings.host.strip("[]")
        return all(_bindable(_address_family(host), host, port) for port in given if port)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._check_ports()
        self._prepare_run_dir()
        config = self.run_dir / "config.properties"
        write_private(config, self._runtime_config())
        torchserve = shutil.which("torchserve", path=str(Path(sys.executable).parent))
        torchserve = torchserve or shutil.which("torchserve")
        if torchserve is None:
            raise ServeError(
                "the torchserve command is not installed in this environment",
                fix="install scibert-pack with its dependencies: pip install scibert-pack",
            )
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise ServeError(
                "TorchServe needs Java 17 and `java` is not on PATH",
                fix="install a JDK 17 (apt-get install -y openjdk-17-jre-headless) and rerun",
            )
        tmp = self.run_dir / "tmp"
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
            **self.settings.extra_env,
        }
        command = [
            torchserve, "--start", "--foreground", "--ncs",
            "--model-store", str(self.store.model_store.resolve()),
            "--ts-config", str(config),
        ]  # fmt: skip
        self.progress(f"starting TorchServe on {self.inference_url} (logs: {self.log_dir})")
        self._stdout = os.fdopen(open_private(self.run_dir / "torchserve.out"), "wb")
        self._process = subprocess.Popen(
            command,
            cwd=self.run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: java and its Python workers
            umask=0o077,  # logs, key file, unpacked archive: readable by this user only
        )
        record = {
            "schema": "scibert-pack/serving/v1",
            "host": self.settings.host,
            "port": self.settings.port,
            "management_port": self.settings.management_port,
            "pid": self._process.pid,
        }
        write_private(self.run_dir / SERVING_RECORD, json.dumps(record) + "\n")

    def wait_ready(self) -> None:
        """Block until the model's workers are READY; ServeError with the log tail otherwise."""
        timeout = self.settings.ready_timeout_s or self.store.startup_timeout_s + 60.0
        deadline = time.monotonic() + timeout
        url = f"{self.management_url}/models/{self.store.model_name}"
        self.progress(f"waiting for {self.store.model_name} workers to be ready")
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise ServeError(
                    f"TorchServe exited while loading {self.store.model_name}:\n{self.log_tail()}",
                    fix=f"read the logs in {self.log_dir}",
                )
            if self._ready_workers(url) >= self.store.min_workers:
                return
            time.sleep(0.25)
        raise ServeError(
            f"{self.store.model_name} was not ready after {timeout:.0f} s:\n{self.log_tail()}",
            fix=f"read the logs in {self.log_dir}, or raise --startup-timeout at build time",
        )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL after `timeout_s`."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process_group(process, timeout_s)
        self._stdout.close()
        self._clean_run_dir()

    # helpers ------------------------------------------------------------------------------
    def token(self, api: str = "inference") -> str | None:
        return read_token(self.key_file, api) if self.store.token_auth else None

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for name in ("logs/model_log.log", "logs/ts_log.log", "torchserve.out"):
            path = self.run_dir / name
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(chunks) or "(no logs written)"

    def _ready_workers(self, url: str) -> int:
        request = urllib.request.Request(url)
        token = self.token("management")
        if self.store.token_auth and token is None:
            return 0  # the key file is written a moment after start
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                described = json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return 0
        workers = described[0].get("workers", []) if described else []
        return sum(1 for w in workers if w.get("status") == "READY")

    def _check_ports(self) -> None:
        for api, port in self.settings.ports().items():
            with socket.socket(_address_family(self.settings.host)) as s:
                try:
                    s.bind((self.settings.host, port))
                except OSError as err:
                    raise PortInUseError(
                        f"port {port} on {self.settings.host} ({api} API) is already in use "
                        f"({err.strerror})",
                        fix=f"stop what listens there (see `ss -ltnp 'sport = :{port}'`) or "
                        "pick other ports with --inference-port/--management-port/"
                        "--metrics-port/--grpc-port",
                    ) from err

    def _prepare_run_dir(self) -> None:
        self.run_dir = secure_run_dir(self.run_dir)
        foreign = sorted(
            name
            for name in set(os.listdir(self.run_dir)) - _RUN_DIR_NAMES
            if not name.startswith("hs_err_pid")  # the JVM's crash report
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (
                f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            )
            raise InputError(
                f"run folder {self.run_dir} holds files serve did not write ({shown}): serve "
                "empties parts of its run folder (tmp/, the key file), so it uses only a new "
                "folder or one it made",
                fix="pass --run-dir with a new or empty folder, e.g. --run-dir "
                f"{self.run_dir / 'scibert-pack-run'}",
            )
        self._clean_run_dir()
        tighten(self.log_dir)  # logs an earlier version of scibert-pack wrote 0644
        (self.run_dir / "tmp").mkdir(mode=0o700)

    def _clean_run_dir(self) -> None:
        """What must not outlive a server: its key, its record, TorchServe's pid file, worker
        sockets and unpacked archive (all in tmp/). Logs stay for reading."""
        for stale in (self.key_file, self.run_dir / SERVING_RECORD, self.run_dir / "tmp"):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(stale).st_mode):
                    shutil.rmtree(stale)
                else:
                    os.unlink(stale)

    def _runtime_config(self) -> str:
        """The store's config.properties with this machine's addresses, ports and store path."""
        s = self.settings
        store = str(self.store.model_store.resolve())
        ports = Ports(s.port, s.management_port, s.metrics_port, s.grpc_port, s.grpc_port + 1)
        overrides = {
            **properties.addresses(s.host, ports),
            "model_store": store,
            "allowed_urls": f"file://{store}/.*",
        }
        config = dict(self.store.config)
        config.update(overrides)
        lines = [f"# Runtime copy of {self.store.root}/config/config.properties for this machine."]
        lines += [f"{key}={value}" for key, value in config.items()]
        return "\n".join(lines) + "\n"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if host.strip("[]").lower() in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # another host name: it may resolve to any interface
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def exposure_warning(host: str, *, token_auth: bool) -> str | None:
    """A warning when the APIs would be reachable from other machines and need no token."""
    if token_auth or is_loopback(host):
        return None
    everywhere = host.strip("[]") in ("0.0.0.0", "::", "")
    where = "every network interface" if everywhere else "an address other machines may reach"
    return (
        f"--host {host} serves on {where}, and this store was built without token "
        "authorization: anyone who can reach this machine can call the inference and "
        "management APIs without a key; rebuild the store with `scibert-pack build ... "
        "--token-auth` (clients then pass --token or --key-file), or serve on "
        "--host 127.0.0.1"
    )


@dataclass(frozen=True)
class ServingRecord:
    """The server a run folder's key file belongs to, as `serve` wrote it at start."""

    host: str
    port: int
    pid: int

    def serves(self, host: str, port: int) -> bool:
        """True when a request to `host`:`port` reaches this server: the same port and the
        address it listens on (a wildcard address covers loopback addresses of its family)."""
        if port != self.port:
            return False
        mine, theirs = _normal_host(self.host), _normal_host(host)
        if mine == theirs:
            return True
        if mine in ("0.0.0.0", "::") and is_loopback(theirs) and theirs != "localhost":
            return mine == "::" or ":" not in theirs
        return False

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False  # gone, or the pid now belongs to another user's process
        return True


def read_serving_record(run_dir: Path) -> ServingRecord | None:
    """The record in `run_dir`, if the folder and the record are this user's alone; None for
    anything else (a folder another user could have written is not believed)."""
    try:
        folder = os.lstat(run_dir)
        if (
            not stat.S_ISDIR(folder.st_mode)
            or folder.st_uid != os.getuid()
            or folder.st_mode & 0o022
        ):
            return None
        fd = os.open(run_dir / SERVING_RECORD, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            if os.fstat(fh.fileno()).st_uid != os.getuid():
                return None
            raw = load_json(fh.read(65_536))
        return ServingRecord(str(raw["host"]), int(raw["port"]), int(raw["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _normal_host(host: str) -> str:
    bare = host.strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        return bare


def read_token(key_file: Path, api: str = "inference") -> str | None:
    """The key TorchServe wrote for `api` (inference, management), or None if absent."""
    try:
        keys = load_json(key_file.read_text(encoding="utf-8"))
        return str(keys[api]["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
