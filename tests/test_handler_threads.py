"""torch threads per worker: the usable CPUs (affinity, cgroup CPU limit) shared by the workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support.fake_context import FakeContext

from scibert_pack.handlers import threads
from scibert_pack.handlers.service import ClassifierService


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


@pytest.mark.parametrize(("files", "proc", "expected"), QUOTAS)
def test_cgroup_cpu_quota(
    tmp_path: Path, files: dict[str, str], proc: str, expected: float | None
) -> None:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc)
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
