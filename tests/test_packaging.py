"""The distribution installs one namespace, `scibert_pack`, and one console script."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _package_folders() -> list[Path]:
    """The repository's top-level package folders: scibert_pack/ and the design's folders."""
    return sorted(init.parent for init in ROOT.glob("*/__init__.py"))


def _installed_name(folder: Path) -> str:
    """scibert_pack/ installs as itself, every other package folder X as scibert_pack/X."""
    return "scibert_pack" if folder.name == "scibert_pack" else f"scibert_pack/{folder.name}"


def test_no_symlink_is_committed() -> None:
    # A Windows checkout turns links into text files, and tools see a linked module twice.
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no committed file modes to read")
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--stage", "-z"],
        check=True, timeout=60, capture_output=True, text=True,
    ).stdout  # fmt: skip
    entries = [entry.split("\t", 1) for entry in listed.split("\0") if entry]
    assert len(entries) > 100, "git listed almost nothing: the check would prove nothing"
    assert [path for meta, path in entries if meta.startswith("120000 ")] == []


def test_wheel_has_every_module_under_one_namespace(tmp_path: Path) -> None:
    # Build from a copy: setuptools leaves build/ and *.egg-info/ in the source folder.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", ".bench-cache", "build", "*-work", "__pycache__", "*.egg-info"),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("scibert_pack-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"scibert_pack", next(t for t in tops if t.endswith(".dist-info"))}
    # Every file of every package folder, modules and data, under its scibert_pack.* name: a
    # new folder or subpackage missing from pyproject's packages/package-dir shows up here.
    expected = {
        f"{_installed_name(folder)}/{path.relative_to(folder).as_posix()}"
        for folder in _package_folders()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {n for n in names if n.startswith("scibert_pack/")} == expected
    for package in (
        "archiver",
        "config",
        "handlers",
        "storage",
        "serving",
        "kserve",
        "cli",
        "demo",
    ):
        assert f"scibert_pack/{package}/__init__.py" in names, package
    assert "scibert_pack/handlers/settings.py" in names
    assert "scibert_pack/py.typed" in names
    assert "scibert_pack/demo/corpus.tsv" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "scibert-pack = scibert_pack.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def test_every_package_folder_imports_under_scibert_pack() -> None:
    # The editable install serves the same names as the wheel (a module added since the last
    # scripts/setup-env.sh is missing until it relinks).
    for folder in _package_folders():
        name = _installed_name(folder).replace("/", ".")
        module = importlib.import_module(name)
        assert Path(module.__file__ or "").resolve() == (folder / "__init__.py").resolve(), name


@pytest.mark.parametrize("where", ["repository-root", "elsewhere"])
def test_the_package_imports_from_any_working_folder(where: str, tmp_path: Path) -> None:
    # `python -c` from the repository root puts its scibert_pack/ folder first on sys.path, a
    # folder without archiver/, config/, ...: scibert_pack/__init__.py extends its __path__.
    done = subprocess.run(
        [sys.executable, "-c", "import scibert_pack.config.properties, scibert_pack.layout"],
        cwd=ROOT if where == "repository-root" else tmp_path,
        check=False, timeout=60, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "build" in result.stdout and "Build a TorchServe model store" in result.stdout


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from scibert_pack.cli import main; sys.argv=['x','--help']\n"
        "try:\n main()\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True)


@pytest.mark.parametrize(
    ("option", "text"),
    [
        ("--max-length", "Truncate texts to this many tokens (8 or more; default: the smaller of 512 and the model's maximum)."),
        ("--explain-steps", "[default: 50]"),
        ("--max-explain-steps", "[default: 500]"),
    ],
    ids=["max-length", "explain-steps", "max-explain-steps"],
)  # fmt: skip
def test_build_help_states_the_defaults(option: str, text: str) -> None:
    result = CliRunner().invoke(cli, ["build", "--help"])
    assert result.exit_code == 0
    # click wraps the help column: compare each option's text with the wrapping undone.
    flat = " ".join(result.stdout.split())
    start = flat.index(f"{option} INTEGER")
    assert text in flat[start : flat.index(" --", start + len(option))]
