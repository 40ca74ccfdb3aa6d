"""Shared fixtures: offline Hugging Face, tiny classifiers built once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

from support.tiny_models import Family, make_tiny_classifier  # noqa: E402

# Servers shared across modules, one per configuration (started on first use).
pytest_plugins = ["support.shared_servers"]

FAMILIES: tuple[Family, ...] = ("bert", "roberta", "distilbert")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[Family, Path]:
    """One tiny saved classifier per BERT family (read-only: copy before changing)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: make_tiny_classifier(root / family, family) for family in FAMILIES}


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
