"""torch threads per worker: the usable CPUs (affinity, cgroup CPU limit) shared by the workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support.fake_context import FakeContext, HttpRequest, run_batch

from scibert_pack.handlers import threads
from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import HandlerSettings, SettingsError


@pytest.mark.parametrize(
    ("workers", "cpus", "expected"),
    [
        pytest.param(1, 8, 8, id="one-worker-takes-all"),
        pytest.param(2, 8, 4, id="two-workers-share"),
        pytest.param(3, 8, 2, id="rounded-down"),
        pytest.param(4, 2, 1, id="more-workers-than-cpus"),
        pytest.param(0, 2, 2, id="zero-workers-read-as-one"),
    ],
)
def test_worker_threads(workers: int, cpus: int, expected: int) -> None:
    assert threads.worker_threads(workers, cpus) == expected


# (files under the cgroup root, /proc/self/cgroup) -> quota in CPUs
QUOTAS = [
    pytest.param({"cpu.max": "200000 100000"}, "0::/\n", 2.0, id="v2-limit-2"),
    pytest.param({"cpu.max": "150000 100000"}, "0::/\n", 1.5, id="v2-limit-1.5"),
    pytest.param({"cpu.max": "max 100000"}, "0::/\n", None, id="v2-no-limit"),
    pytest.param(
        {"kubepods/pod1/cpu.max": "50000 100000", "cpu.max": "max 100000"},
        "0::/kubepods/pod1\n",
        0.5,
        id="v2-own-cgroup-first",
    ),
    pytest.param(
        {
            "cpu,cpuacct/pod/cpu.cfs_quota_us": "300000",
            "cpu,cpuacct/pod/cpu.cfs_period_us": "100000",
        },
        "4:cpu,cpuacct:/pod\n1:memory:/pod\n",
        3.0,
        id="v1-limit-3",
    ),
    pytest.param(
        {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
        "4:cpu:/\n",
        None,
        id="v1-no-limit",
    ),
    pytest.param({}, "", None, id="no-cgroup-files"),
    pytest.param({"cpu.max": "garbage"}, "0::/\n", None, id="unreadable-value"),
]


def _cgroup_tree(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    """A cgroup folder holding `files` and a /proc/self/cgroup file saying `proc`."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc)
    return root, proc_file


@pytest.mark.parametrize(("files", "proc", "expected"), QUOTAS)
def test_cgroup_cpu_quota(
    tmp_path: Path, files: dict[str, str], proc: str, expected: float | None
) -> None:
    root, proc_file = _cgroup_tree(tmp_path, files, proc)
    assert threads.cgroup_cpu_quota(root, proc_file) == expected


def test_usable_cpus_is_capped_by_the_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    proc_file = tmp_path / "proc"
    proc_file.write_text("0::/\n")
    assert threads.usable_cpus(tmp_path, proc_file) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.usable_cpus(tmp_path, proc_file) == len(os.sched_getaffinity(0))


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("handler", "min_workers", "expected"),
    [
        pytest.param({"torch_threads": 0}, 1, threads.usable_cpus(), id="auto-one-worker"),
        pytest.param(
            {"torch_threads": 0},
            64,
            threads.worker_threads(64, threads.usable_cpus()),
            id="auto-many-workers",
        ),
        pytest.param({"torch_threads": 3}, 64, 3, id="explicit-setting-wins"),
    ],
)
@pytest.mark.usefixtures("restore_torch_threads")
def test_worker_sets_its_thread_count(
    tiny_bert: Path, handler: dict[str, int], min_workers: int, expected: int
) -> None:
    context = FakeContext(tiny_bert, handler_settings=handler)
    context.model_yaml_config["minWorkers"] = min_workers
    torch.set_num_threads(7)
    ClassifierService.from_context(context)
    assert torch.get_num_threads() == expected


# -- lending idle siblings' CPUs to an explanation (CoreShare) ---------------------------------
# Two CoreShare objects open the lock file separately, as two worker processes do: flock locks
# belong to the open file, so they conflict within one test process just as across workers.


def _pair(
    tmp_path: Path,
) -> tuple[threads.CoreShare, list[int], threads.CoreShare, list[int]]:
    """Two workers with 1 thread each on 2 CPUs, and the thread counts each one set."""
    lock = tmp_path / "workers.lock"
    first: list[int] = []
    second: list[int] = []
    return (
        threads.CoreShare(lock, 1, 2, first.append),
        first,
        threads.CoreShare(lock, 1, 2, second.append),
        second,
    )


def test_lone_explanation_gets_all_cores_and_gives_them_back(tmp_path: Path) -> None:
    worker, counts, _sibling, _ = _pair(tmp_path)
    with worker.busy(), worker.all_cores() as used:
        assert (used, counts) == (2, [2])
    assert counts == [2, 1]


def test_busy_sibling_keeps_the_share(tmp_path: Path) -> None:
    worker, counts, sibling, _ = _pair(tmp_path)
    with sibling.busy(), worker.busy(), worker.all_cores() as used:
        assert used == 1
    assert counts == []
    with worker.busy(), worker.all_cores() as used:  # the sibling is idle again
        assert used == 2


def test_two_explaining_workers_never_both_raise_threads(tmp_path: Path) -> None:
    worker, _, sibling, sibling_threads = _pair(tmp_path)
    with (
        worker.busy(),
        worker.all_cores() as used,
        sibling.busy(),
        sibling.all_cores() as sibling_used,
    ):
        assert (used, sibling_used) == (2, 1)
    assert sibling_threads == []
    with sibling.busy(), sibling.all_cores() as sibling_used:  # the first one is done
        assert sibling_used == 2


@pytest.mark.parametrize(
    ("pressure", "expected"),
    [(None, 2), (0.0, 2), (threads.BUSY_PRESSURE, 2), (threads.BUSY_PRESSURE + 0.1, 1), (95.0, 1)],
    ids=["no-psi", "idle", "at-the-bound", "just-above", "contended"],
)
def test_no_lending_while_other_processes_contend_for_the_cpus(
    tmp_path: Path, pressure: float | None, expected: int
) -> None:
    counts: list[int] = []
    worker = threads.CoreShare(tmp_path / "lock", 1, 2, counts.append, pressure=lambda: pressure)
    with worker.busy(), worker.all_cores() as used:
        assert used == expected
    assert counts == ([2, 1] if expected == 2 else [])


PSI = (
    "some avg10={} avg60=1.00 avg300=0.50 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0"
)
# (files under the cgroup root, /proc/self/cgroup, /proc/pressure/cpu) -> some avg10
PRESSURES = [
    pytest.param(
        {"pod/cpu.pressure": PSI.format("42.50")},
        "0::/pod\n",
        PSI.format("3.00"),
        42.5,
        id="own-cgroup-first",
    ),
    pytest.param({}, "0::/pod\n", PSI.format("3.00"), 3.0, id="machine-without-cgroup-psi"),
    pytest.param({}, "", None, None, id="no-psi"),
    pytest.param({}, "0::/\n", "some avg10=high", None, id="unreadable-value"),
]


@pytest.mark.parametrize(("files", "proc", "machine", "expected"), PRESSURES)
def test_cpu_pressure(
    tmp_path: Path,
    files: dict[str, str],
    proc: str,
    machine: str | None,
    expected: float | None,
) -> None:
    root, proc_file = _cgroup_tree(tmp_path, files, proc)
    machine_file = tmp_path / "pressure-cpu"
    if machine is not None:
        machine_file.write_text(machine + "\n")
    assert threads.cpu_pressure(root, proc_file, machine_file) == expected


@pytest.mark.parametrize(
    ("share", "cpus", "usable_path"),
    [(2, 2, True), (1, 1, True), (1, 2, False)],
    ids=["share-is-all-cpus", "one-cpu", "no-lock-file"],
)
def test_no_lending(tmp_path: Path, share: int, cpus: int, usable_path: bool) -> None:
    counts: list[int] = []
    path = tmp_path / "lock" if usable_path else tmp_path / "missing" / "lock"
    worker = threads.CoreShare(path, share, cpus, counts.append)
    with worker.busy(), worker.all_cores() as used:
        assert used == share
    assert counts == []


def test_lock_file_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "lock").symlink_to(target)
    counts: list[int] = []
    worker = threads.CoreShare(tmp_path / "lock", 1, 2, counts.append)
    with worker.busy(), worker.all_cores() as used:
        assert used == 1
    assert not target.exists() and counts == []


@pytest.mark.parametrize(
    ("handler", "lends"),
    [
        pytest.param({}, False, id="default-off"),
        pytest.param({"lend_idle_cpus": True}, True, id="on"),
        pytest.param({"lend_idle_cpus": True, "torch_threads": 1}, False, id="explicit-threads"),
    ],
)
@pytest.mark.usefixtures("restore_torch_threads")
def test_lending_is_opt_in(tiny_bert: Path, handler: dict[str, object], lends: bool) -> None:
    context = FakeContext(tiny_bert, handler_settings=handler)
    context.model_yaml_config["minWorkers"] = 64  # a share below the usable CPUs
    service = ClassifierService.from_context(context)
    lending = service.cores.cpus > service.cores.share and service.cores._fd is not None
    assert lending == (lends and threads.usable_cpus() > 1)


def test_lend_idle_cpus_must_be_a_bool() -> None:
    with pytest.raises(SettingsError, match="lend_idle_cpus must be true or false, got 'yes'"):
        HandlerSettings(lend_idle_cpus="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("requests", "lent"),
    [
        pytest.param([HttpRequest({"texts": ["cells divide"]})], False, id="predict-only"),
        pytest.param(
            [HttpRequest({"texts": ["cells divide"], "parameters": {"n_steps": 4}}, explain=True)],
            True,
            id="explain",
        ),
        pytest.param(
            [
                HttpRequest({"texts": ["photon"]}),
                HttpRequest(
                    {"texts": ["cells divide"], "parameters": {"n_steps": 4}}, explain=True
                ),
            ],
            True,
            id="explain-beside-predict",
        ),
    ],
)
@pytest.mark.usefixtures("restore_torch_threads")
def test_an_explain_batch_runs_all_its_passes_on_the_lent_cpus(
    tiny_bert: Path, tmp_path: Path, requests: list[HttpRequest], lent: bool
) -> None:
    """Every pass of an explain batch borrows the CPUs: the explanations (whose first passes
    predict their texts) and the prediction of its other texts; a batch without explanations
    stays on the share."""
    service = ClassifierService.from_context(FakeContext(tiny_bert))
    current = [1]
    service.cores = threads.CoreShare(tmp_path / "lock", 1, 2, lambda n: current.append(n))
    seen: list[int] = []
    hook = service.classifier.model.register_forward_pre_hook(
        lambda _module, _args: seen.append(current[-1])
    )
    try:
        responses = run_batch(service.handle, FakeContext(tiny_bert), requests)
    finally:
        hook.remove()
    assert [r.status for r in responses] == [200] * len(requests)
    assert seen and set(seen) == ({2} if lent else {1})
    assert current[-1] == 1  # the share again after the batch
