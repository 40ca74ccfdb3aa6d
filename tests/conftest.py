"""Shared fixtures: offline Hugging Face, tiny classifiers built once per session."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

from support.tiny_models import Family, make_tiny_classifier  # noqa: E402

# One torch thread in the test process, as each of TorchServe's two workers has (handlers/
# threads.py). The tiny models gain nothing from a second thread, and an OpenMP thread that waits
# for a busy core costs far more than it brings: training a tiny classifier for the handler tests
# took 0.8 s on one thread and 10 to 40 s on two on a loaded 2-core machine. Tests that run the
# real MiniLM in process take every CPU back with the `all_cpus` fixture.
CPU_THREADS = torch.get_num_threads()
torch.set_num_threads(1)

# Started in the background by a shell without job control, pytest inherits SIGINT ignored,
# and so would every child it starts (an ignored signal stays ignored across exec): the tests
# that press Ctrl-C on a real `scibert-pack` process would see it ignored. Take Python's own
# handler back; children then start with SIGINT at its default, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Servers shared across modules, one per configuration (started on first use).
pytest_plugins = ["support.shared_servers"]

FAMILIES: tuple[Family, ...] = ("bert", "roberta", "distilbert")


def _restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


# A handler set up in process (ClassifierService.from_context) sets torch's thread count as a
# worker does: put it back after each test and each module, or it holds for the rest of the run.
keep_torch_threads = pytest.fixture(autouse=True)(_restore_torch_threads)
keep_module_torch_threads = pytest.fixture(autouse=True, scope="module")(_restore_torch_threads)


@pytest.fixture(scope="module")
def all_cpus() -> Iterator[None]:
    """torch's own thread count in this process for a module (a user's run of the demo has it).

    Not when pytest-xdist runs other test processes beside this one: their servers keep the
    cores busy, and torch's second thread then waits for a core (the real model's training took
    234 s instead of 23 s that way)."""
    before = torch.get_num_threads()
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(CPU_THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[Family, Path]:
    """One tiny saved classifier per BERT family (read-only: copy before changing)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: make_tiny_classifier(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def trained(tiny_models: dict[Family, Path]) -> dict[Family, tuple[Any, Any]]:
    """Each tiny classifier loaded in process as (model, tokenizer), once per module."""
    from support.in_process_service import load_trained

    return {family: load_trained(folder) for family, folder in tiny_models.items()}


@pytest.fixture(scope="session")
def tiny_bert(tiny_models: dict[Family, Path]) -> Path:
    return tiny_models["bert"]


@pytest.fixture
def model_copy(tmp_path: Path, tiny_bert: Path) -> Callable[..., Path]:
    """A writable copy of the tiny BERT classifier, for tests that break a model folder."""

    def copy(name: str = "model", source: Path | None = None) -> Path:
        dest = tmp_path / name
        shutil.copytree(source or tiny_bert, dest)
        return dest

    return copy


# Under pytest-xdist (`-n`, with `--dist loadfile`: a module's tests and its module-scoped server
# stay in one process), a module starts when a process is free, so the run ends with the
# longest module started last. Start the long ones first: these three took 60, 40 and 25 s of a
# serial run, then the other modules that start servers, then the quick ones.
LONGEST_MODULES = ("test_rehearse.py", "test_demo.py", "test_demo_real_model.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in LONGEST_MODULES:
            return LONGEST_MODULES.index(name)
        marks = {mark.name for mark in item.iter_markers()}
        return len(LONGEST_MODULES) + (0 if "slow" in marks else 1 if "server" in marks else 2)

    # A module moves as a whole (its tests stay together and in their order), so module-scoped
    # fixtures are still set up once with or without xdist.
    module_rank: dict[Path, int] = {}
    for item in items:
        own = rank(item)
        module_rank[item.path] = min(own, module_rank.get(item.path, own))
    first_seen = {path: k for k, path in enumerate(module_rank)}
    items.sort(key=lambda item: (module_rank[item.path], first_seen[item.path]))
