"""A pod, minus Kubernetes: one process tree in its own mount, network and PID namespaces.

Inside: the store bind-mounted read-only at /mnt/models (KServe mounts the storage volume
read-only into the model container), a private tmpfs /tmp, an empty working folder owned by
the image's user, the loopback interface up with the pod's address on it (the kernel here has
no dummy module; the address exists only in this namespace, which has no route out), and the
container's command exec'd with only its env, as its user. Every mount lives in the private
mount namespace, so nothing appears on the host and nothing needs unmounting: the mounts go
when the namespace's last process does. Every mount inherited from the host turns read-only in
there, so even a container running as root cannot change the host's files.

`PodNetwork` runs HTTP calls from a thread that entered the pod's network namespace (setns), so
probes and requests reach the pod address as the kubelet and the ingress do.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from scibert_pack.errors import ServeError
from scibert_pack.processes import stop_process_group

MODEL_ROOT = "/mnt/models"
# The pod's private /tmp (a tmpfs, as the container's writable layer would give it).
POD_TMP = Path("/tmp")
POD_IP = "10.244.0.7"
_TOOLS = ("unshare", "nsenter", "setpriv", "ip", "mount", "env")
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


@dataclass(frozen=True)
class PodProcessSpec:
    argv: tuple[str, ...]
    env: dict[str, str]
    # Host folders: the model store (mounted at /mnt/models) and the empty working folder.
    store: Path
    workdir: Path
    # None: keep the caller's identity (partial rehearsal without root).
    uid: int | None
    gid: int | None
    groups: tuple[int, ...]
    read_only_root: bool
    no_new_privileges: bool
    isolated: bool
    # What a root container keeps (setpriv names); a non-root one keeps none.
    capabilities: tuple[str, ...] = ()
    # Folders of the stand-in environment the container's user must reach (the venv, its
    # base Python, java); an ancestor the user cannot enter gets masked inside the pod.
    stand_in: tuple[Path, ...] = ()
    pod_ip: str = POD_IP


def namespace_tools() -> dict[str, str | None]:
    """The host tools a full rehearsal needs, found on PATH (None when missing)."""
    return {
        name: shutil.which(name) for name in ("unshare", "nsenter", "setpriv", "ip", "mount", "env")
    }


def can_isolate() -> tuple[bool, str]:
    """Whether this process can build a pod sandbox, and why not."""
    if os.geteuid() != 0:
        return False, "not running as root (namespaces, mounts and the uid change need it)"
    tools = namespace_tools()
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        return False, f"{', '.join(missing)} not found on PATH (util-linux, iproute2)"
    # Root in a container may still lack the right to make namespaces: try once.
    probe = [tools["unshare"] or "unshare", "--mount", "--net", "--pid", "--fork", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"unshare did not run ({err})"
    if done.returncode != 0:
        return False, f"unshare cannot make namespaces here ({done.stderr.strip()[:200]})"
    return True, ""


def pod_script(spec: PodProcessSpec, stage: Path) -> str:
    """The shell the new namespaces run: set the pod up as root, then exec the container."""
    tools = namespace_tools()
    q = shlex.quote
    mount, ip = q(tools["mount"] or "mount"), q(tools["ip"] or "ip")
    lines = [
        "set -eu",
        f"{ip} link set lo up",
        f"{ip} addr add {q(spec.pod_ip)}/32 dev lo",
        # The host's files are not the pod's to change: every mount it inherited turns
        # read-only (in this namespace only); the pod writes only where a container could.
        "awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r point; do "
        f'{mount} -o remount,bind,ro "$point" 2>/dev/null || true; done',
        f"{mount} -t tmpfs -o mode=1777,nosuid,nodev pod-shm /dev/shm",
        # The store first goes to a staging point: it may live under /mnt, hidden next.
        f"{mount} --bind {q(str(spec.store))} {q(str(stage))}",
        f"{mount} -t tmpfs -o mode=0755,size=1m pod-mnt /mnt",
        f"mkdir {MODEL_ROOT}",
        f"{mount} --bind {q(str(stage))} {MODEL_ROOT}",
        f"{mount} -o remount,bind,ro {MODEL_ROOT}",
    ]
    # The pod's own /tmp hides the host's: a stand-in that lives there (a checkout under /tmp
    # with its .venv) goes to a staging point first and is shown again at its own path.
    under_tmp = [p for p in spec.stand_in if p.is_relative_to(POD_TMP) and p != POD_TMP]
    tmp_points = [stage.parent / f"stage-tmp-{i}" for i in range(len(under_tmp))]
    for path, point in zip(under_tmp, tmp_points, strict=True):
        point.mkdir()  # before the start: the host's filesystem is read-only inside
        lines.append(f"{mount} --rbind {q(str(path))} {q(str(point))}")
    lines.append(f"{mount} -t tmpfs -o mode=1777,nosuid,nodev pod-tmp {POD_TMP}")
    for path, point in zip(under_tmp, tmp_points, strict=True):
        lines += [f"mkdir -p {q(str(path))}", f"{mount} --rbind {q(str(point))} {q(str(path))}"]
    if spec.uid is not None:
        for i, (blocked, inside) in enumerate(stand_in_masks(spec.stand_in, spec.uid, spec.groups)):
            # The image has its Python where its user can run it; here it may sit under a
            # folder such as /root (0700): show the user only the stand-in's own folders.
            stages = [stage.parent / f"stage-stand-in-{i}-{j}" for j in range(len(inside))]
            for path, point in zip(inside, stages, strict=True):
                point.mkdir()  # before the start: the host's filesystem is read-only inside
                lines += [
                    f"{mount} --rbind {q(str(path))} {q(str(point))}",
                ]
            lines.append(f"{mount} -t tmpfs -o mode=0755 pod-stand-in {q(str(blocked))}")
            for path, point in zip(inside, stages, strict=True):
                lines += [
                    f"mkdir -p {q(str(path))}",
                    f"{mount} --rbind {q(str(point))} {q(str(path))}",
                ]
    # A mount of its own: writable although the host's filesystem is read-only here.
    lines += [
        f"{mount} --bind {q(str(spec.workdir))} {q(str(spec.workdir))}",
        # A bind copies the read-only flag of the mount it comes from.
        f"{mount} -o remount,bind,rw {q(str(spec.workdir))}",
    ]
    if spec.read_only_root:
        # The working folder and /tmp are part of the image's root filesystem.
        lines += [
            f"{mount} -o remount,ro /tmp",
            f"{mount} -o remount,bind,ro {q(str(spec.workdir))}",
        ]
    lines.append(f"cd {q(str(spec.workdir))}")
    env_words = [q(f"{key}={value}") for key, value in spec.env.items()]
    setpriv = setpriv_words(spec)
    words = [q(tools["env"] or "env"), "-i", *env_words, *(q(w) for w in [*setpriv, *spec.argv])]
    lines.append("exec " + " ".join(words))
    return "\n".join(lines) + "\n"


def stand_in_masks(
    paths: tuple[Path, ...], uid: int, groups: tuple[int, ...]
) -> list[tuple[Path, tuple[Path, ...]]]:
    """(the highest folder `uid` cannot enter, the needed paths below it), per such folder."""
    masks: dict[Path, list[Path]] = {}
    for path in paths:
        for ancestor in reversed(path.parents):
            if ancestor == Path("/"):
                continue
            if not _can_enter(ancestor, uid, groups):
                needed = masks.setdefault(ancestor, [])
                if path not in needed:
                    needed.append(path)
                break
    return [(blocked, tuple(inside)) for blocked, inside in masks.items()]


def _can_enter(folder: Path, uid: int, groups: tuple[int, ...]) -> bool:
    try:
        st = folder.stat()
    except OSError:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid in groups:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def setpriv_words(spec: PodProcessSpec) -> list[str]:
    """setpriv with the container's user, groups and privileges; [] to keep the caller's."""
    if spec.uid is None:
        return []
    groups = ",".join(str(g) for g in spec.groups)
    words = [
        namespace_tools()["setpriv"] or "setpriv",
        f"--reuid={spec.uid}",
        f"--regid={spec.gid if spec.gid is not None else 0}",
        f"--groups={groups}" if groups else "--clear-groups",
    ]
    # The container runtime gives a non-root process no capabilities and root its default set:
    # none of them lets the pod remount the host's read-only files.
    kept = "".join(f",+{c}" for c in spec.capabilities) if spec.uid == 0 else ""
    words += [f"--inh-caps=-all{kept}", f"--bounding-set=-all{kept}"]
    if spec.no_new_privileges:
        words.append("--no-new-privs")
    return [*words, "--"]


class PodProcess:
    """The container's process tree; `stop()` ends all of it (also on Ctrl-C, via finally)."""

    def __init__(self, spec: PodProcessSpec, scratch: Path) -> None:
        self.spec = spec
        self.scratch = scratch
        self.log_path = scratch / "container.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        if self.spec.isolated:
            stage = self.scratch / "stage-models"
            stage.mkdir()
            script = pod_script(self.spec, stage)
            (self.scratch / "pod.sh").write_text(script, encoding="utf-8")
            command = [
                namespace_tools()["unshare"] or "unshare",
                "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
                "--propagation", "private",
                "/bin/sh", "-c", script,
            ]  # fmt: skip
            env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
            cwd = self.scratch
        else:
            command, env, cwd = list(self.spec.argv), dict(self.spec.env), self.spec.workdir
        self.started_at = time.monotonic()
        self._process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process else None

    def wait_namespace(self, timeout_s: float = 10.0) -> str:
        """The pod's network namespace path, once unshare has entered it."""
        assert self._process is not None
        mine = os.stat("/proc/self/ns/net").st_ino
        path = f"/proc/{self._process.pid}/ns/net"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino != mine:
                    return path
            time.sleep(0.02)
        raise ServeError(
            f"the pod's namespaces were not set up:\n{self.log_tail()}",
            fix="run as root on a kernel with user, mount and network namespaces",
        )

    def exec_in_pod(self, argv: tuple[str, ...], timeout_s: float) -> tuple[int | None, str]:
        """Run `argv` in the container as the kubelet runs an exec probe: same namespaces,
        user, env and working folder. (exit code or None on timeout, output)."""
        spec = self.spec
        words = ["env", "-i", *(f"{k}={v}" for k, v in spec.env.items())]
        if spec.isolated:
            init = self._namespace_init()
            if init is None:
                return 1, "the container is not running"
            tools = namespace_tools()
            enter = [tools["nsenter"] or "nsenter", f"--target={init}", "--mount", "--net", "--pid"]
            # cd inside, after entering: nsenter's own --wd leaves a working folder getcwd()
            # cannot name for a non-root user.
            inner = [tools["env"] or "env", *words[1:], *setpriv_words(spec), *argv]
            script = f"cd {shlex.quote(str(spec.workdir))} && exec {shlex.join(inner)}"
            command = [*enter, "--root", "--", "/bin/sh", "-c", script]
        else:
            command = [*words, *argv]
        process = subprocess.Popen(
            command,
            cwd=spec.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # The kubelet gives up on the probe; its whole process group goes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return None, ""
        return process.returncode, out.decode("utf-8", "replace")

    def _namespace_init(self) -> int | None:
        """The host pid of the pod's first process (unshare's child, pid 1 inside)."""
        if self._process is None:
            return None
        pid = self._process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the process group (as the kubelet does), SIGKILL after `timeout_s`."""
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "\n".join(tail) or "(the container wrote nothing)"


class PodNetwork:
    """Runs calls from one thread inside the pod's network namespace (or the host's)."""

    def __init__(self, netns: str | None) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=1, initializer=_enter_netns, initargs=(netns,) if netns else (None,)
        )

    def run(self, call: Callable[[], T]) -> T:
        return self._pool.submit(call).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Listener:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def listeners(pid: int) -> tuple[Listener, ...]:
    """TCP sockets listening in the network namespace of `pid` (from /proc/PID/net/tcp{,6})."""
    found: list[Listener] = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        try:
            rows = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            found.append(Listener(_host(address, width), int(port, 16)))
    return tuple(sorted(set(found), key=lambda item: (item.port, item.host)))


def _host(hexed: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hexed)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words) if width == 8 else ipaddress.IPv6Address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _enter_netns(netns: str | None) -> None:
    if netns is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({netns}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    # If this process is killed outright, the pod goes with it (unshare --kill-child does the
    # rest): no TorchServe is left behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
