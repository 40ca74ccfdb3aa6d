"""A lone clone passes its tests: no code or test reads data from outside the repository.

The KServe CRD schema the manifest tests need once came from a `shared/` folder beside the
checkout, which a user who clones the repository does not have; it now lives in tests/data/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Code and configuration a test run executes or reads (prose in *.md may name anything).
SCANNED_SUFFIXES = frozenset({".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json"})
SKIPPED_DIRS = frozenset(
    {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build",
     "dist", "node_modules", "logs", "out", "demo-work", ".bench-cache", "data"}
)  # fmt: skip
# Built from pieces so that this file does not match itself.
_SHARED = "sha" + "red"
OUTSIDE = re.compile(
    rf"\.\./+{_SHARED}\b"  # a relative path up and over
    rf"|\b{_SHARED}/kserve\b"  # the schema's old home, whatever the prefix
    rf"|/work/+{_SHARED}\b"  # the machine's absolute path
    r"|parents\[\d+\]\s*/\s*['\"]\.\.['\"]"  # a folder beside the checkout
)


def outside_references(text: str) -> list[str]:
    """The lines of `text` that name a folder outside the repository."""
    return [line.strip() for line in text.splitlines() if OUTSIDE.search(line)]


def _scanned_files() -> list[Path]:
    found: list[Path] = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        found.extend(Path(folder) / f for f in files if Path(f).suffix in SCANNED_SUFFIXES)
    return sorted(found)


@pytest.mark.parametrize(
    "line",
    [
        'SHARED = Path(__file__).resolve().parents[1] / "' + ".." + '" / "data"',
        'schema = Path("../' + _SHARED + '/kserve/x.json")',
        "cp /work/" + _SHARED + "/kserve/*.json tests/",
        'open("' + _SHARED + '/kserve/inferenceservice.json")',
    ],
    ids=["parents-dotdot", "relative", "absolute", "bare"],
)
def test_the_detector_sees_a_path_outside(line: str) -> None:
    assert outside_references(line) == [line]


def test_no_file_reads_from_outside_the_repository() -> None:
    files = _scanned_files()
    scanned = {p.relative_to(ROOT).parts[0] for p in files}
    # The walk does reach the tests, the scripts and the package's code.
    assert {"tests", "scripts", "handlers", "kserve", "scibert_pack"} <= scanned
    offenders = {
        str(p.relative_to(ROOT)): hits
        for p in files
        if (hits := outside_references(p.read_text(encoding="utf-8", errors="replace")))
    }
    assert offenders == {}


def test_the_kserve_schema_is_carried_with_its_source() -> None:
    data = ROOT / "tests" / "data" / "kserve"
    assert (data / "inferenceservice.v1beta1.strict.schema.json").is_file()
    source = (data / "SOURCE.md").read_text(encoding="utf-8")
    assert "v0.20.0" in source and "1fb781055dd1567164358233e1125142ca6ef1fe" in source
