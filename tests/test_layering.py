"""Each folder imports only the folders the README's "How it is built" map allows.

The map is the contract for where code may go: the worker's handlers import nothing of ours, the
library under the CLI never imports the CLI, client code reaches the server only through the
run record `serve` writes. A new import that breaks the map fails here, naming file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# errors, files, interrupts, layout, processes, progress: shared by everything
CORE = "scibert_pack"

# folder -> the folders of ours it may import (itself always allowed).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "handlers": frozenset(),
    "config": frozenset(),
    CORE: frozenset({"config"}),
    "storage": frozenset({CORE}),
    # The build checks models against the demo corpus and copies the handlers into the archive.
    "archiver": frozenset({CORE, "config", "handlers", "demo.corpus"}),
    "serving": frozenset({CORE, "config", "archiver"}),
    # handlers: the settings declarations (handlers/settings.py `setting`) of batch settings.
    "client": frozenset({CORE, "config", "serving", "handlers"}),
    "kserve": frozenset({CORE, "config", "archiver", "storage"}),
    # scibert_pack/api.py: one public call per job, over every library folder.
    "api": frozenset({CORE, "config", "archiver", "handlers", "serving", "client", "storage", "kserve"}),
    "demo": frozenset({CORE, "config", "archiver", "handlers", "serving", "client", "storage", "kserve", "api"}),
    "cli": frozenset({CORE, "config", "archiver", "handlers", "serving", "client", "storage", "kserve", "demo", "api"}),
    # scibert_pack/testing/: helpers the suite and scripts/ share (tiny models, soak, S3 faults).
    "testing": frozenset({CORE, "config", "archiver", "handlers", "serving", "client", "storage", "kserve", "demo", "api"}),
}  # fmt: skip


def _folder(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if parts[0] == "scibert_pack":
        if parts[1:] == ("api.py",):
            return "api"
        if len(parts) > 2 and parts[1] in ("cli", "testing"):
            return parts[1]
        return CORE
    return parts[0]


def _ours(module: str) -> str | None:
    """`scibert_pack.archiver.build` -> "archiver"; `scibert_pack.errors` -> CORE."""
    if module != "scibert_pack" and not module.startswith("scibert_pack."):
        return None
    parts = module.split(".")
    if len(parts) == 1 or parts[1] not in {*MAY_IMPORT, "cli"}:
        return CORE
    if parts[1] == "demo" and len(parts) > 2 and parts[2] == "corpus":
        return "demo.corpus"
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            # `from scibert_pack import cli` names a folder in the imported names.
            if node.module == "scibert_pack":
                found += [(node.lineno, f"scibert_pack.{a.name}") for a in node.names]
    return found


def _modules() -> list[Path]:
    folders = [*MAY_IMPORT, "scibert_pack"]
    return sorted(p for f in folders if (ROOT / f).is_dir() for p in (ROOT / f).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_follow_the_map(path: Path) -> None:
    folder = _folder(path)
    allowed = MAY_IMPORT[folder] | {folder}
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in _imports(path)
        if (target := _ours(module)) is not None
        and target not in allowed
        # demo.corpus is part of demo
        and not (target == "demo.corpus" and "demo" in allowed)
    ]
    assert wrong == [], f"{folder}/ may import only {sorted(allowed)}"


def _reaches_into_tests(module: str) -> bool:
    return module.split(".")[0] in ("support", "tests", "conftest")


@pytest.mark.parametrize(
    "path",
    [*_modules(), *sorted((ROOT / "scripts").glob("*.py"))],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_nothing_outside_tests_imports_the_suite(path: Path) -> None:
    """The library and scripts/ import no test helper (shared ones live in scibert_pack.testing),
    and no script puts tests/ on sys.path."""
    wrong = [f"{line}: {module}" for line, module in _imports(path) if _reaches_into_tests(module)]
    assert wrong == [], f"{path.relative_to(ROOT)} imports the test suite"
    assert not re.search(r"sys\.path.*tests|tests.*sys\.path", path.read_text(encoding="utf-8"))


def test_the_map_covers_every_package_folder() -> None:
    folders = {init.parent.name for init in ROOT.glob("*/__init__.py")}
    assert folders <= {*MAY_IMPORT, "scibert_pack"}, "a new folder needs its row in MAY_IMPORT"
    assert len(_modules()) > 80, "found almost no modules: the check would prove nothing"


@pytest.mark.parametrize(
    ("module", "folder"),
    [
        ("scibert_pack.errors", CORE),
        ("scibert_pack", CORE),
        ("scibert_pack.cli.query", "cli"),
        ("scibert_pack.api", "api"),
        ("scibert_pack.testing.soak_load", "testing"),
        ("scibert_pack.demo.corpus", "demo.corpus"),
        ("scibert_pack.demo.run", "demo"),
        ("scibert_pack.client.batch", "client"),
        ("scibert_packaging", None),
        ("torch", None),
    ],
    ids=str,
)
def test_imports_are_sorted_into_folders(module: str, folder: str | None) -> None:
    assert _ours(module) == folder
