"""The distribution installs one namespace, `scibert_pack`, and one console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_one_top_level_namespace(tmp_path: Path) -> None:
    # Build from a copy: setuptools leaves build/ and *.egg-info/ in the source folder.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", ".bench-cache", "build", "*-work", "__pycache__"),
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
