"""How many torch threads a worker should use: its share of the CPUs it may really use.

torch's default is one thread per core of the machine. In a Kubernetes pod with a CPU limit
that is the node's cores, not the limit, and with several TorchServe workers each one takes all
cores: threads then wait on each other at every parallel region (OpenMP) and the pod is
throttled. A worker's share is the usable CPUs (affinity mask, capped by the cgroup CPU quota)
divided by the number of workers, at least 1.

Standard library only: runs inside the TorchServe worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_PRESSURE = Path("/proc/pressure/cpu")
# No lending while runnable tasks waited for a CPU more than this share (%) of the last 10 s
# (PSI "some avg10"). On CPUs many other processes also want, an explanation on more threads than
# its share waits at every parallel region for the thread that lost its CPU. Measured on 2 cores
# (MiniLM, one text): at 90-96% pressure a lent explanation took 1.8 s, 15x its 0.12 s on the
# share; at 4-18% (a benchmark's own client and servers) lending still won. A lone CPU-bound
# process does not show here until the CPUs are oversubscribed.
BUSY_PRESSURE = 40.0


def worker_threads(workers: int, cpus: int) -> int:
    """Threads per worker when `workers` workers share `cpus` CPUs."""
    return max(1, cpus // max(1, workers))


class CoreShare:
    """Lends a worker the CPUs of its idle sibling workers for an explanation.

    Each worker has its share of the CPUs; an explanation alone on the server would leave the
    others' share idle. The workers of one TorchServe front end (same parent process) share a
    lock file: a worker holds it shared while it handles a batch, and takes it exclusively, without
    waiting, to explain on all usable CPUs. Taking it fails while any sibling handles a batch, so
    two workers never both raise their threads, and a worker under predict load never has a
    sibling explaining on its cores. A sibling that starts a batch during such an explanation
    does not wait: the two overlap on the CPUs for at most that explanation.
    """

    def __init__(
        self,
        path: Path | None,
        share: int,
        cpus: int,
        set_threads: Callable[[int], None],
        pressure: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.share, self.cpus = share, cpus
        self._set_threads = set_threads
        self._pressure = pressure
        self._fd: int | None = None
        if path is not None and cpus > share:
            with contextlib.suppress(OSError):  # another user's file, a read-only /tmp: no lending
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                self._fd = os.open(path, flags, 0o600)

    @staticmethod
    def sibling_lock() -> Path:
        """The lock file of the workers started by this worker's parent (the front end)."""
        return Path(tempfile.gettempdir()) / f"scibert-pack-workers-{os.getppid()}.lock"

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Marks this worker busy while it handles a batch (best effort, never waits)."""
        held = self._flock(fcntl.LOCK_SH | fcntl.LOCK_NB)
        try:
            yield
        finally:
            if held:
                self._flock(fcntl.LOCK_UN)

    @contextlib.contextmanager
    def all_cores(self) -> Iterator[int]:
        """Runs the block on all usable CPUs when every sibling is idle and the CPUs are not
        contended by other processes (`pressure`, see BUSY_PRESSURE); yields the threads."""
        if self._fd is None or (self._pressure() or 0.0) > BUSY_PRESSURE:
            yield self.share
            return
        # Converting the shared lock to exclusive drops it first (flock(2)): on failure, retake it.
        if not self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB):
            self._flock(fcntl.LOCK_SH | fcntl.LOCK_NB)
            yield self.share
            return
        self._set_threads(self.cpus)
        try:
            yield self.cpus
        finally:
            self._set_threads(self.share)
            self._flock(fcntl.LOCK_SH | fcntl.LOCK_NB)

    def _flock(self, operation: int) -> bool:
        if self._fd is None:
            return False
        try:
            fcntl.flock(self._fd, operation)
        except OSError:
            return False
        return True


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may run on, capped by its cgroup's CPU quota (rounded down, >= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def cpu_pressure(
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    proc_pressure: Path = PROC_PRESSURE,
) -> float | None:
    """CPU pressure (PSI "some avg10", % of the last 10 s) of this process's cgroup (v2), else
    of the machine; None where the kernel has no PSI."""
    own = [f / "cpu.pressure" for f in _cgroup_folders(cgroup_root, proc_cgroup)]
    for path in [*own, proc_pressure]:
        text = _read(path)
        if text is None:
            continue
        for line in text.splitlines():
            fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            if line.startswith("some ") and "avg10" in fields:
                try:
                    return float(fields["avg10"])
                except ValueError:
                    return None
        return None
    return None


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """The CPU limit in CPUs (2.0 for a `cpu: 2` limit), or None when there is none."""
    for folder in _cgroup_folders(cgroup_root, proc_cgroup):
        v2 = _read(folder / "cpu.max")  # "200000 100000", or "max 100000" for no limit
        if v2 is not None:
            parts = v2.split()
            if len(parts) == 2 and parts[0] != "max":
                return _ratio(parts[0], parts[1])
            return None
        quota = _read(folder / "cpu.cfs_quota_us")  # cgroup v1: -1 for no limit
        period = _read(folder / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _ratio(quota, period) if not quota.startswith("-") else None
    return None


def _cgroup_folders(cgroup_root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's own cgroup folders (v2 unified, v1 cpu controller), then the roots."""
    folders: list[Path] = []
    for line in (_read(proc_cgroup) or "").splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        relative = path.strip().lstrip("/")
        if controllers == "":
            folders.append(cgroup_root / relative)
        elif "cpu" in controllers.split(","):
            folders.append(cgroup_root / controllers / relative)
            folders.append(cgroup_root / "cpu" / relative)
    folders += [cgroup_root, cgroup_root / "cpu"]
    return [f for i, f in enumerate(folders) if f not in folders[:i]]


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = float(quota), float(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
