"""What `scibert-pack build` writes: archive contents, config.properties, report, reproducibility,
atomic publication."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.config.properties import parse
from scibert_pack.errors import BuildError, InputError
from scibert_pack.handlers.settings import RANGES, HandlerSettings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
HANDLER_FILES = sorted(p.name for p in (ROOT / "handlers").glob("*.py"))


def _build_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["build", *args])
    return result.exit_code, result.stdout, result.stderr


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_holds_manifest_handler_model_and_settings(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, _ = _build_cli(
        str(tiny_bert), "--name", "scibert", "--version", "2.1", "-o", str(out),
        "--batch-size", "4", "--max-batch-delay", "25", "--explain-steps", "20",
        "--internal-batch-size", "8", "--merge-subwords", "--max-length", "32",
    )  # fmt: skip
    assert code == 0
    assert stdout == f"{out}\n"
    mar = zipfile.ZipFile(out / "model-store" / "scibert.mar")
    names = set(mar.namelist())
    expected_model = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected_model <= names
    assert {f"scibert_pack_handlers/{f}" for f in HANDLER_FILES} <= names
    assert {"scibert_pack_handler.py", "model-config.yaml", "MAR-INF/MANIFEST.json"} <= names
    assert all(i.compress_type == zipfile.ZIP_STORED for i in mar.infolist())
    for name in expected_model:
        assert mar.read(name) == (tiny_bert / name).read_bytes(), name
    for name in HANDLER_FILES:
        assert mar.read(f"scibert_pack_handlers/{name}") == (ROOT / "handlers" / name).read_bytes()

    manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    assert manifest["model"] == {
        "modelName": "scibert",
        "serializedFile": "model.safetensors",
        "handler": "scibert_pack_handler.py",
        "modelVersion": "2.1",
        "configFile": "model-config.yaml",
    }
    model_config = yaml.safe_load(mar.read("model-config.yaml"))
    assert {k: v for k, v in model_config.items() if k != "handler"} == {
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": 4,
        "maxBatchDelay": 25,
        "responseTimeout": 120,
        "startupTimeout": 120,
    }
    handler = HandlerSettings.from_mapping(model_config["handler"])
    assert handler == HandlerSettings(
        max_length=32, explain_steps=20, internal_batch_size=8, merge_subwords=True
    )
    entry = mar.read("scibert_pack_handler.py").decode()
    assert "from scibert_pack_handlers.torchserve_entry import handle" in entry


# The exact order config.properties writes its keys in, whatever the options.
KEY_ORDER = [
    "inference_address", "management_address", "metrics_address",
    "grpc_inference_address", "grpc_inference_port", "grpc_management_address",
    "grpc_management_port", "enable_metrics_api", "metrics_mode", "model_metrics_auto_detect",
    "number_of_netty_threads", "job_queue_size", "max_request_size", "max_response_size",
    "model_store", "model_snapshot", "enable_envvars_config", "ts_open_inference_protocol",
    "install_py_dep_per_model", "enable_model_api", "allowed_urls", "disable_token_authorization",
]  # fmt: skip
DEFAULT_SNAPSHOT_VERSION = {
    "defaultVersion": True,
    "marName": "sci.mar",
    "minWorkers": 2,
    "maxWorkers": 2,
    "batchSize": 8,
    "maxBatchDelay": 5,
    "responseTimeout": 120,
    "startupTimeout": 120,
}

KSERVE_KEYS = {
    "inference_address": "http://0.0.0.0:8085",
    "management_address": "http://0.0.0.0:8081",
    "metrics_address": "http://0.0.0.0:8082",
    "grpc_inference_address": "0.0.0.0",
    "grpc_inference_port": "7070",
    "grpc_management_address": "0.0.0.0",
    "grpc_management_port": "7071",
    "enable_metrics_api": "true",
    "metrics_mode": "prometheus",
    "model_metrics_auto_detect": "true",
    "number_of_netty_threads": "4",
    "job_queue_size": "1000",
    "max_request_size": "10485760",
    "max_response_size": "67108864",
    "model_store": "/mnt/models/model-store",
    "enable_envvars_config": "false",
    "ts_open_inference_protocol": "true",
    "install_py_dep_per_model": "false",
    "enable_model_api": "false",
    "allowed_urls": "file:///mnt/models/model-store/.*",
    "disable_token_authorization": "true",
}


@pytest.mark.parametrize(
    ("args", "changes", "snapshot_changes"),
    [
        ([], {}, {}),
        (["--token-auth"], {"disable_token_authorization": "false"}, {}),
        (
            ["--inference-port", "9085", "--management-port", "9081", "--metrics-port", "9082",
             "--grpc-port", "9070", "--netty-threads", "2", "--job-queue-size", "50"],
            {
                "inference_address": "http://0.0.0.0:9085",
                "management_address": "http://0.0.0.0:9081",
                "metrics_address": "http://0.0.0.0:9082",
                "grpc_inference_port": "9070",
                "grpc_management_port": "9071",
                "number_of_netty_threads": "2",
                "job_queue_size": "50",
            },
            {},
        ),
        (
            ["--profile", "local"],
            {
                "inference_address": "http://127.0.0.1:8085",
                "management_address": "http://127.0.0.1:8081",
                "metrics_address": "http://127.0.0.1:8082",
                "grpc_inference_address": "127.0.0.1",
                "grpc_management_address": "127.0.0.1",
                "model_store": "{store}",
                "allowed_urls": "file://{store}/.*",
            },
            {},
        ),
        (
            ["--min-workers", "2", "--max-workers", "3", "--batch-size", "16",
             "--max-batch-delay", "40", "--response-timeout", "30", "--startup-timeout", "200"],
            {},
            {"minWorkers": 2, "maxWorkers": 3, "batchSize": 16, "maxBatchDelay": 40,
             "responseTimeout": 30, "startupTimeout": 200},
        ),
    ],
    ids=["kserve-default", "token-auth", "ports-and-threads", "local", "workers-and-batching"],
)  # fmt: skip
def test_config_properties_key_by_key(
    tiny_bert: Path,
    tmp_path: Path,
    args: list[str],
    changes: dict[str, str],
    snapshot_changes: dict[str, int],
) -> None:
    out = tmp_path / "out"
    code, _, stderr = _build_cli(str(tiny_bert), "--name", "sci", "-o", str(out), *args)
    assert code == 0, stderr
    text = (out / "config" / "config.properties").read_text()
    values = parse(text)
    snapshot = json.loads(values.pop("model_snapshot"))
    store = str((out / "model-store").resolve())
    expected = {**KSERVE_KEYS, **{k: v.format(store=store) for k, v in changes.items()}}
    assert values == expected
    assert snapshot == {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {"sci": {"1.0": {**DEFAULT_SNAPSHOT_VERSION, **snapshot_changes}}},
    }
    # Every key once, in the fixed order; none TorchServe 0.12 ignores or that breaks batching
    # (service_envelope, metrics_format).
    keys = [line.split("=", 1)[0] for line in text.splitlines() if line and line[0] != "#"]
    assert keys == KEY_ORDER
    assert "# No service_envelope" in text and "pytorch/serve#2158" in text
    model_config = yaml.safe_load(
        zipfile.ZipFile(out / "model-store" / "sci.mar").read("model-config.yaml")
    )
    worker_keys = {k: v for k, v in model_config.items() if k != "handler"}
    assert worker_keys == {
        k: v
        for k, v in snapshot["models"]["sci"]["1.0"].items()
        if k not in ("defaultVersion", "marName")
    }


def test_config_keys_come_in_a_stable_order(tiny_bert: Path, tmp_path: Path) -> None:
    def keys(out: Path, *args: str) -> list[str]:
        assert _build_cli(str(tiny_bert), "--name", "a", "-o", str(out), *args)[0] == 0
        text = (out / "config" / "config.properties").read_text()
        return [line.split("=", 1)[0] for line in text.splitlines() if line and line[0] != "#"]

    assert keys(tmp_path / "1") == keys(tmp_path / "2", "--batch-size", "32", "--token-auth")


@pytest.mark.parametrize("fmt", ["zip-store", "default", "tgz", "no-archive"])
def test_build_is_reproducible(tiny_bert: Path, tmp_path: Path, fmt: str) -> None:
    reports = []
    for run in ("a", "b"):
        out = tmp_path / run
        code, _, stderr = _build_cli(
            str(tiny_bert), "--name", "m", "-o", str(out), "--archive-format", fmt
        )
        assert code == 0, stderr
        reports.append(json.loads((out / "build-report.json").read_text()))
    assert reports[0]["archive"] == reports[1]["archive"]
    suffix = {"zip-store": ".mar", "default": ".mar", "tgz": ".tar.gz", "no-archive": ""}[fmt]
    first, second = (tmp_path / r / "model-store" / f"m{suffix}" for r in ("a", "b"))
    if fmt == "no-archive":
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
        assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
        assert (first / "MAR-INF" / "MANIFEST.json").is_file()
    else:
        assert first.read_bytes() == second.read_bytes()
    if suffix == ".mar":
        # Every entry, MANIFEST.json included, carries the pinned time, not the build time.
        times = {info.date_time for info in zipfile.ZipFile(first).infolist()}
        assert times == {(2020, 1, 1, 0, 0, 0)}
        assert zipfile.ZipFile(first).testzip() is None
    if fmt == "tgz":
        with tarfile.open(first) as tar:
            assert "m/MAR-INF/MANIFEST.json" in tar.getnames()


def test_default_format_deflates(tiny_bert: Path, tmp_path: Path) -> None:
    assert (
        _build_cli(
            str(tiny_bert), "--name", "m", "-o", str(tmp_path), "--archive-format", "default"
        )[0]
        == 0
    )
    infos = zipfile.ZipFile(tmp_path / "model-store" / "m.mar").infolist()
    assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}


def _other_filesystem(tmp_path: Path) -> Path:
    """A folder on another filesystem than tmp_path (tmpfs /dev/shm lists files in another
    order than ext4), or a skip that says why there is none."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm: no second filesystem to build on")
    if shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip(f"/dev/shm is on the same filesystem as {tmp_path}")
    return shm


def _tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """A folder as {relative path: (bytes, mode, mtime)}: what a no-archive build must fix."""
    return {
        p.relative_to(root).as_posix(): (
            p.read_bytes() if p.is_file() else b"",
            stat.S_IMODE(p.stat().st_mode),
            int(p.stat().st_mtime),
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("fmt", ["zip-store", "default", "tgz", "no-archive"])
@pytest.mark.parametrize("where", ["umask-077", "other-filesystem"])
def test_same_bytes_across_umask_and_filesystem(
    tiny_bert: Path, tmp_path: Path, fmt: str, where: str
) -> None:
    """torch-model-archiver's packing recorded permission bits (umask), the filesystem's listing
    order and, in a tgz, the builder's uid/gid and names: the same inputs gave other bytes."""
    settings = BuildSettings(name="m", archive_format=fmt)  # type: ignore[arg-type]
    normal = build(tiny_bert, settings, tmp_path / "normal").archive
    with contextlib.ExitStack() as stack:
        if where == "umask-077":
            old = os.umask(0o077)
            stack.callback(os.umask, old)
            other_out = tmp_path / "umask"
        else:
            shm = _other_filesystem(tmp_path)
            other_out = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=shm))) / "o"
        other = build(tiny_bert, settings, other_out).archive
        if fmt == "no-archive":
            assert _tree(other) == _tree(normal)
            assert {m for _, m, _ in _tree(other).values()} == {0o644, 0o755}
        else:
            assert _sha(other) == _sha(normal)


EPOCH_2023 = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("source_date_epoch", "stamp"),
    [(None, (2020, 1, 1, 0, 0, 0)), (str(EPOCH_2023), (2023, 11, 14, 22, 13, 20))],
    ids=["fixed-2020", "source-date-epoch"],
)
@pytest.mark.parametrize("fmt", ["zip-store", "default"])
def test_zip_entries_are_sorted_with_fixed_mode_and_time(
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    source_date_epoch: str | None,
    stamp: tuple[int, ...],
) -> None:
    if source_date_epoch is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", source_date_epoch)
    settings = BuildSettings(name="m", archive_format=fmt)  # type: ignore[arg-type]
    with zipfile.ZipFile(build(tiny_bert, settings, tmp_path).archive) as mar:
        infos = mar.infolist()
        assert [i.filename for i in infos] == sorted(i.filename for i in infos)
        assert "MAR-INF/MANIFEST.json" in mar.namelist()
        assert not [i for i in infos if i.is_dir()]  # files only, like torch-model-archiver
        assert {(i.date_time, i.external_attr >> 16, i.create_system) for i in infos} == {
            (stamp, stat.S_IFREG | 0o644, 3)
        }
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        assert mar.testzip() is None
    day, rest = (
        f"{stamp[2]:02d}/{stamp[1]:02d}/{stamp[0]}",
        "{:02d}:{:02d}:{:02d}".format(*stamp[3:]),
    )
    assert manifest["createdOn"] == f"{day} {rest}"
    assert manifest["runtime"] == "python"


@pytest.mark.parametrize(
    ("source_date_epoch", "epoch"),
    [(None, 1_577_836_800), (str(EPOCH_2023), EPOCH_2023)],
    ids=["fixed-2020", "source-date-epoch"],
)
def test_tgz_members_have_owner_0_and_fixed_mode_and_time(
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source_date_epoch: str | None,
    epoch: int,
) -> None:
    if source_date_epoch is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", source_date_epoch)
    archive = build(tiny_bert, BuildSettings(name="m", archive_format="tgz"), tmp_path).archive
    header = archive.read_bytes()[:10]
    assert header[3] & 0x08 == 0  # no file name in the gzip header
    assert int.from_bytes(header[4:8], "little") == epoch
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "m/MAR-INF/MANIFEST.json" in names
    assert all(name.startswith("m/") for name in names)
    assert {(m.type, m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
        (tarfile.REGTYPE, 0o644, 0, 0, "", "", epoch)
    }


def test_report_lists_every_artifact_with_its_sha256(tiny_bert: Path, tmp_path: Path) -> None:
    assert _build_cli(str(tiny_bert), "--name", "m", "-o", str(tmp_path))[0] == 0
    report = json.loads((tmp_path / "build-report.json").read_text())
    assert report["schema"] == "scibert-pack/build-report/v1"
    listed = {a["path"]: a for a in report["artifacts"]}
    assert set(listed) == {"model-store/m.mar", "config/config.properties"}
    for rel, entry in listed.items():
        assert entry["sha256"] == _sha(tmp_path / rel)
        assert entry["size"] == (tmp_path / rel).stat().st_size
    assert report["archive"]["sha256"] == listed["model-store/m.mar"]["sha256"]
    assert report["model"]["labels"] == ["biology", "chemistry", "physics"]
    assert report["model"]["architecture"] == "BertForSequenceClassification"
    assert report["settings"]["handler"]["max_length"] == 64  # capped at the tiny model's 64
    assert report["versions"]["torchserve"] == "0.12.0"
    assert report["ports"] == {
        "inference": 8085, "management": 8081, "metrics": 8082,
        "grpc_inference": 7070, "grpc_management": 7071,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("family", "max_length"), [("bert", 64), ("roberta", 64), ("distilbert", 64)]
)
def test_every_bert_family_builds(
    tiny_models: dict[str, Path], tmp_path: Path, family: str, max_length: int
) -> None:
    result = build(tiny_models[family], BuildSettings(name=family), tmp_path)
    assert result.report["model"]["max_length"] == max_length
    assert result.archive.is_file()


def test_max_length_over_the_model_maximum_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    code, stdout, stderr = _build_cli(
        str(tiny_bert), "--name", "m", "-o", str(tmp_path / "o"), "--max-length", "100"
    )
    assert (code, stdout) == (2, "")
    assert stderr == (
        f"checking model folder {tiny_bert}\n"
        f"Error: --max-length 100 is more than {tiny_bert} can read (64 tokens, from "
        "max_position_embeddings in config.json); pass --max-length between 8 and 64\n"
    )
    assert not (tmp_path / "o").exists()


# Exact messages: each names the option (not the model-config.yaml key), the bad value, what is
# allowed and a command-line fix. {m}: the model folder (the tiny model reads 64 tokens).
BAD_OPTIONS: list[tuple[str, list[str], str]] = [
    ("batch-size", ["--batch-size", "0"], "--batch-size 0 is out of range (expected 1 to 1024); pass --batch-size between 1 and 1024"),
    ("workers", ["--min-workers", "2", "--max-workers", "1"], "--max-workers 1 is below --min-workers 2; pass --max-workers 2 or more"),
    ("max-length-0", ["--max-length", "0"], "--max-length 0 is out of range (expected 8 to 64); pass --max-length between 8 and 64"),
    ("max-length-7", ["--max-length", "7"], "--max-length 7 is out of range (expected 8 to 64); pass --max-length between 8 and 64"),
    ("max-length-negative", ["--max-length", "-1"], "--max-length -1 is out of range (expected 8 to 64); pass --max-length between 8 and 64"),
    ("max-length-over-model", ["--max-length", "65"], "--max-length 65 is more than {m} can read (64 tokens, from max_position_embeddings in config.json); pass --max-length between 8 and 64"),
    ("explain-steps-0", ["--explain-steps", "0"], "--explain-steps 0 is out of range (expected 1 to 500); pass --explain-steps between 1 and 500"),
    ("explain-steps-over-default-cap", ["--explain-steps", "900"], "--explain-steps 900 is more than the default --max-explain-steps 500 (the most steps a request may ask for); pass --explain-steps between 1 and 500, or add --max-explain-steps 900 or more"),
    ("explain-steps-over-any-cap", ["--explain-steps", "20000"], "--explain-steps 20000 is more than the default --max-explain-steps 500 (the most steps a request may ask for); pass --explain-steps between 1 and 500"),
    ("cap-under-default-steps", ["--max-explain-steps", "20"], "--max-explain-steps 20 is below the default --explain-steps 50 (the steps an explanation takes when a request names none); pass --max-explain-steps 50 or more, or add --explain-steps between 1 and 20"),
    ("steps-over-given-cap", ["--explain-steps", "60", "--max-explain-steps", "40"], "--explain-steps 60 is more than --max-explain-steps 40; pass --explain-steps between 1 and 40, or --max-explain-steps 60 or more"),
    ("steps-over-cap-default-value-given", ["--explain-steps", "50", "--max-explain-steps", "20"], "--explain-steps 50 is more than --max-explain-steps 20; pass --explain-steps between 1 and 20, or --max-explain-steps 50 or more"),
    ("explain-tolerance-too-big", ["--explain-tolerance", "0.5"], "--explain-tolerance 0.5 is out of range (expected 1e-06 to 0.1, or 0); pass --explain-tolerance between 1e-06 and 0.1 (or 0 to turn it off)"),
    ("explain-tolerance-negative", ["--explain-tolerance", "-0.001"], "--explain-tolerance -0.001 is out of range (expected 1e-06 to 0.1, or 0); pass --explain-tolerance between 1e-06 and 0.1 (or 0 to turn it off)"),
    ("explain-tolerance-below-range", ["--explain-tolerance", "1e-7"], "--explain-tolerance 1e-07 is out of range (expected 1e-06 to 0.1, or 0); pass --explain-tolerance between 1e-06 and 0.1 (or 0 to turn it off)"),
    ("explain-tolerance-nan", ["--explain-tolerance", "nan"], "--explain-tolerance nan is out of range (expected 1e-06 to 0.1, or 0); pass --explain-tolerance between 1e-06 and 0.1 (or 0 to turn it off)"),
    ("explain-tolerance-word", ["--explain-tolerance", "tight"], "Invalid value for '--explain-tolerance': 'tight' is not a valid float."),
    ("max-explain-steps-0", ["--max-explain-steps", "0"], "--max-explain-steps 0 is out of range (expected 1 to 10000); pass --max-explain-steps between 1 and 10000"),
    ("internal-batch-size", ["--internal-batch-size", "0"], "--internal-batch-size 0 is out of range (expected 1 to 4096); pass --internal-batch-size between 1 and 4096"),
    ("max-texts-per-request", ["--max-texts-per-request", "0"], "--max-texts-per-request 0 is out of range (expected 1 to 100000); pass --max-texts-per-request between 1 and 100000"),
    ("max-text-chars", ["--max-text-chars", "0"], "--max-text-chars 0 is out of range (expected 1 to 10000000); pass --max-text-chars between 1 and 10000000"),
    ("max-explain-texts", ["--max-explain-texts", "100001"], "--max-explain-texts 100001 is out of range (expected 1 to 100000); pass --max-explain-texts between 1 and 100000"),
    ("torch-threads", ["--torch-threads", "-1"], "--torch-threads -1 is out of range (expected 0 to 1024); pass --torch-threads between 0 and 1024"),
    ("name", ["--name", "../evil"], "model name '../evil' is not allowed: it is the key in request URLs and must match [A-Za-z0-9][A-Za-z0-9_.-]*, at most 200 characters; pass --model-name with letters, digits, '.', '_' or '-', e.g. --model-name scibert"),
    ("name-trailing-newline", ["--name", "tiny\n"], "model name 'tiny\\n' is not allowed: it is the key in request URLs and must match [A-Za-z0-9][A-Za-z0-9_.-]*, at most 200 characters; pass --model-name with letters, digits, '.', '_' or '-', e.g. --model-name scibert"),
    ("name-300-chars", ["--name", "n" * 300], "model name '" + "n" * 39 + "..." + "n" * 11 + "' is 300 characters long, more than the 200 allowed: it names the archive file (NAME.tar.gz) and staging files, which must stay under the 255-byte file name limit; pass a --model-name of at most 200 characters"),
    ("version-trailing-newline", ["--version", "1.0\n"], "model version '1.0\\n' is not allowed (expected e.g. 1.0 or 2024-05); pass --version with letters, digits, '.', '_' or '-'"),
    ("max-request-size-5000-digits", ["--max-request-size", "9" * 5000], "Invalid value for '--max-request-size': '" + "9" * 39 + "..." + "9" * 11 + "' is not a size; give bytes or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 10MiB"),
    ("port-clash", ["--metrics-port", "8085"], "ports must be distinct, got {{'inference': 8085, 'management': 8081, 'metrics': 8085, 'grpc_inference': 7070, 'grpc_management': 7071}}; give each API its own port"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"), [c[1:] for c in BAD_OPTIONS], ids=[c[0] for c in BAD_OPTIONS]
)
def test_bad_options_are_usage_errors(
    tiny_bert: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["--name", "m"] if "--name" not in args else []
    code, stdout, stderr = _build_cli(str(tiny_bert), *base, "-o", str(tmp_path / "o"), *args)
    assert (code, stdout) == (2, "")
    assert stderr.splitlines()[-1] == "Error: " + message.format(m=tiny_bert)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [([], 1e-3), (["--explain-tolerance", "0.01"], 0.01), (["--explain-tolerance", "0"], 0.0)],
    ids=["default", "given", "off"],
)
def test_explain_tolerance_reaches_the_archive(
    tiny_bert: Path, tmp_path: Path, args: list[str], expected: float
) -> None:
    out = tmp_path / "o"
    code, _, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", str(out), *args)
    assert code == 0, stderr
    archive = zipfile.ZipFile(out / "model-store" / "m.mar")
    model_config = yaml.safe_load(archive.read("model-config.yaml"))
    assert model_config["handler"]["explain_tolerance"] == expected


@pytest.mark.parametrize(
    ("max_length", "expected"),
    [(None, 64), (8, 8), (64, 64)],
    ids=["default", "lowest", "model-maximum"],
)
def test_max_length_is_kept_as_given(
    tiny_bert: Path, tmp_path: Path, max_length: int | None, expected: int
) -> None:
    result = build(tiny_bert, BuildSettings(name="m", max_length=max_length), tmp_path)
    model_config = yaml.safe_load(zipfile.ZipFile(result.archive).read("model-config.yaml"))
    assert model_config["handler"]["max_length"] == expected
    assert result.report["model"]["max_length"] == expected


def test_every_numeric_handler_setting_has_a_range() -> None:
    """HandlerSettings checks the settings RANGES names: a new one without a range goes unchecked."""
    numeric = {
        f.name
        for f in dataclasses.fields(HandlerSettings)
        if isinstance(f.default, int) and not isinstance(f.default, bool)
    }
    assert numeric == {*RANGES, "explain_steps"}


@pytest.mark.parametrize("key", list(RANGES))
def test_handler_settings_enforce_their_ranges(key: str) -> None:
    low, high = RANGES[key]
    base = {"explain_steps": 1} if key == "max_explain_steps" else {}
    for good in (low, high):
        HandlerSettings(**{**base, key: good})
    for bad in (low - 1, high + 1):
        with pytest.raises(SettingsError):
            HandlerSettings(**{**base, key: bad})


def test_click_usage_errors_exit_2(tiny_bert: Path) -> None:
    code, _, stderr = _build_cli(str(tiny_bert))
    assert code == 2
    assert "Missing option '--model-name'" in stderr


def test_json_and_quiet(tiny_bert: Path, tmp_path: Path) -> None:
    code, stdout, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", str(tmp_path), "--json")
    assert code == 0
    assert stderr == ""
    result = json.loads(stdout)
    assert result["archive"] == str(tmp_path / "model-store" / "m.mar")
    assert result["build_report"]["archive"]["sha256"] == _sha(tmp_path / "model-store" / "m.mar")
    code, stdout, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", str(tmp_path), "-q")
    assert (code, stdout, stderr) == (0, f"{tmp_path}\n", "")


def test_progress_goes_to_stderr(tiny_bert: Path, tmp_path: Path) -> None:
    code, stdout, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", str(tmp_path))
    assert code == 0 and stdout == f"{tmp_path}\n"
    lines = stderr.splitlines()
    assert lines[0] == f"checking model folder {tiny_bert}"
    assert lines[1].startswith("staging 4 model files (")
    assert lines[2] == "packing m.mar (zip-store)"
    assert lines[-1] == f"next: scibert-pack serve {tmp_path}"


def test_parallel_builds_of_one_name_do_not_clobber(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """torch-model-archiver alone stages both in $TMPDIR/<name>; ours stay apart."""
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def run(family: str) -> None:
        try:
            for i in range(3):
                r = build(
                    tiny_models[family], BuildSettings(name="same"), tmp_path / f"{family}{i}"
                )
                results[f"{family}{i}"] = str(r.report["archive"]["sha256"])
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f,)) for f in ("bert", "roberta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for key, digest in results.items():
        mar = tmp_path / key / "model-store" / "same.mar"
        assert _sha(mar) == digest
        config = json.loads(zipfile.ZipFile(mar).read("config.json"))
        assert config["model_type"] == key.rstrip("0123456789")


@pytest.mark.parametrize("fmt", ["zip-store", "default", "tgz", "no-archive"])
def test_parallel_builds_into_one_output_both_succeed(
    tiny_models: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    """10 pairs of builds of one name into one folder, each pair started together: every build
    succeeds and the store left is whole and one build's own (archive, config and report)."""
    out = tmp_path / "out"
    settings = BuildSettings(name="same", archive_format=fmt)  # type: ignore[arg-type]
    errors: list[BaseException] = []
    for _ in range(10):
        barrier = threading.Barrier(2)

        def run(family: str, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=30)
                build(tiny_models[family], settings, out)
            except BaseException as err:  # surfaced below
                errors.append(err)

        threads = [threading.Thread(target=run, args=(f,)) for f in ("bert", "roberta")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, [str(e) for e in errors]
        report = json.loads((out / "build-report.json").read_text())
        listed = {a["path"]: a["sha256"] for a in report["artifacts"]}
        on_disk = {
            p.relative_to(out).as_posix(): _sha(p)
            for p in out.rglob("*")
            if p.is_file() and p.name != "build-report.json"
        }
        assert on_disk == listed
        model_type = report["model"]["model_type"]
        config = json.loads(
            _archived_file(out / "model-store" / settings.archive_name, fmt, "config.json")
        )
        assert config["model_type"] == model_type
        assert sorted(p.name for p in out.iterdir()) == [
            "build-report.json",
            "config",
            "model-store",
        ]


@pytest.mark.parametrize("fmt", ["no-archive", "tgz"])
def test_parallel_cli_builds_in_processes_both_succeed(
    tiny_models: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    """The issue's reproduction: pairs of `scibert-pack build` processes, one name, one -o."""
    exe = str(Path(sys.executable).parent / "scibert-pack")
    out = tmp_path / "out"
    for _ in range(5):
        argv = [["build", str(tiny_models[family]), "--name", "same", "-o", str(out), "-q",
                 "--archive-format", fmt] for family in ("bert", "roberta")]  # fmt: skip
        procs = [
            subprocess.Popen(
                [exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for args in argv
        ]
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert (proc.returncode, stderr) == (0, ""), stderr
            assert stdout == f"{out}\n"
    report = json.loads((out / "build-report.json").read_text())
    for artifact in report["artifacts"]:
        assert _sha(out / artifact["path"]) == artifact["sha256"]


@pytest.mark.parametrize("release_after_s", [0.3, None], ids=["waits-then-publishes", "gives-up"])
def test_build_waits_for_a_publishing_build_and_says_so(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release_after_s: float | None
) -> None:
    """Another build holding the output folder's lock: this one says it waits, then publishes,
    or gives up past the timeout with nothing published."""
    import fcntl

    from scibert_pack.archiver import build as build_module

    monkeypatch.setattr(build_module, "PUBLISH_LOCK_TIMEOUT_S", 1.0)
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a build in another process would, while publishing
    if release_after_s is not None:
        threading.Timer(release_after_s, os.close, args=(fd,)).start()
    messages: list[str] = []
    try:
        if release_after_s is None:
            with pytest.raises(BuildError) as caught:
                build(tiny_bert, BuildSettings(name="m"), out, progress=messages.append)
            assert str(caught.value) == (
                f"another build has been publishing into {out} for over 1 s; nothing was "
                f"published; find the build holding it (fuser -v {out}), stop it if it is "
                "stuck, then rerun"
            )
            assert sorted(p.name for p in out.iterdir()) == []
        else:
            build(tiny_bert, BuildSettings(name="m"), out, progress=messages.append)
            assert (out / "model-store" / "m.mar").is_file()
    finally:
        if release_after_s is None:
            os.close(fd)
    assert f"waiting for another build that is publishing into {out}" in messages


@pytest.mark.parametrize("fmt", ["zip-store", "tgz", "no-archive"])
def test_longest_name_builds_and_uploads(tiny_bert: Path, tmp_path: Path, fmt: str) -> None:
    """200 characters, the limit: every file and staging name (NAME.tar.gz, .NAME.old,
    .NAME.tar.gz.partial) stays under the 255-byte file name limit."""
    name = "n" * 200
    out = tmp_path / "out"
    args = ["build", str(tiny_bert), "--name", name, "-o", str(out), "-q", "--archive-format", fmt]
    for _ in range(2):  # the second build replaces the first (.NAME.old for a folder)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert (out / "model-store" / settings_archive_name(name, fmt)).exists()
    result = CliRunner().invoke(cli, ["upload", str(out), str(tmp_path / "dest")])
    assert result.exit_code == 0, result.output


def settings_archive_name(name: str, fmt: str) -> str:
    return BuildSettings(name=name, archive_format=fmt).archive_name  # type: ignore[arg-type]


def _archived_file(archive: Path, fmt: str, name: str) -> bytes:
    if fmt == "no-archive":
        return (archive / name).read_bytes()
    if fmt == "tgz":
        with tarfile.open(archive) as tgz:
            member = tgz.extractfile(f"{archive.name.removesuffix('.tar.gz')}/{name}")
            assert member is not None
            return member.read()
    return zipfile.ZipFile(archive).read(name)


def test_rebuild_replaces_the_store_and_drops_other_formats(
    tiny_bert: Path, tmp_path: Path
) -> None:
    assert (
        _build_cli(
            str(tiny_bert), "--name", "m", "-o", str(tmp_path), "--archive-format", "no-archive"
        )[0]
        == 0
    )
    assert (tmp_path / "model-store" / "m").is_dir()
    assert _build_cli(str(tiny_bert), "--name", "m", "-o", str(tmp_path))[0] == 0
    assert sorted(p.name for p in (tmp_path / "model-store").iterdir()) == ["m.mar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "build-report.json",
        "config",
        "model-store",
    ]


def test_model_folder_vanishing_mid_build_leaves_nothing(
    model_copy: Callable[..., Path], tmp_path: Path
) -> None:
    import shutil

    folder = model_copy()
    out = tmp_path / "out"

    def progress(message: str) -> None:
        if message.startswith("staging"):
            shutil.rmtree(folder)

    with pytest.raises(BuildError) as caught:
        build(folder, BuildSettings(name="m"), out, progress=progress)
    assert str(caught.value).startswith(f"a file vanished while building from {folder} (")
    assert str(caught.value).endswith(
        "; nothing was published; keep the model folder in place until the build finishes and rerun"
    )
    assert not out.exists()


def test_failed_rebuild_keeps_the_previous_store(
    model_copy: Callable[..., Path], tmp_path: Path
) -> None:
    folder = model_copy()
    out = tmp_path / "out"
    first = build(folder, BuildSettings(name="m"), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (folder / "config.json").write_text("{}")
    with pytest.raises(InputError):
        build(folder, BuildSettings(name="m"), out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert first.archive.is_file()


def test_full_disk_leaves_no_partial_archive(tiny_bert: Path, tmp_path: Path) -> None:
    """A file-size limit makes writes fail like a full disk (EFBIG), in a child process."""
    out = tmp_path / "out"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))\n"
        "from scibert_pack.cli import main\n"
        "sys.argv = ['scibert-pack', 'build', sys.argv[1], '--name', 'm', '-o', sys.argv[2]]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tiny_bert), str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"Error: building into {out} ran out of disk space (" in proc.stderr
    assert "free space on the disk of" in proc.stderr
    assert not out.exists()


def _no_space(*_: object, **__: object) -> Path:
    raise OSError(errno.ENOSPC, "No space left on device")


# (folders that exist before the build, -o, what is left after the failed build)
PARTIAL_OUTPUT_CASES: list[tuple[str, list[str], str, list[str]]] = [
    ("new-tree", [], "nest/a/b", []),
    ("existing-parent", ["nest"], "nest/a/b", ["nest"]),
    ("existing-parent-with-file", ["nest", "nest/keep.txt"], "nest/a/b", ["nest", "nest/keep.txt"]),
    ("existing-output", ["nest"], "nest", ["nest"]),
    ("existing-store", ["nest", "nest/model-store"], "nest", ["nest", "nest/model-store"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "out", "after"),
    [c[1:] for c in PARTIAL_OUTPUT_CASES],
    ids=[c[0] for c in PARTIAL_OUTPUT_CASES],
)
def test_failed_build_removes_the_folders_it_created(
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    before: list[str],
    out: str,
    after: list[str],
) -> None:
    """A build that fails after making its output folder leaves the tree as it found it."""
    monkeypatch.chdir(tmp_path)
    for rel in before:
        path = tmp_path / rel
        if path.suffix:
            path.write_text("x")
        else:
            path.mkdir()
    monkeypatch.setattr("scibert_pack.archiver.build.pack", _no_space)
    code, stdout, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", out)
    assert (code, stdout) == (1, "")
    assert stderr.splitlines()[-1] == (
        f"Error: building into {out} ran out of disk space; nothing was published; "
        f"free space on the disk of {out} (about twice the model's size) and rerun"
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == after


def test_output_that_is_a_file_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, _, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", str(target))
    assert code == 2
    assert f"output {target} exists and is not a folder" in stderr or "is a file" in stderr


# (id, what -o holds before, the error; None: the build goes ahead)
OUTPUT_FOLDERS: list[tuple[str, list[str], str | None]] = [
    ("new-folder", [], None),
    ("empty-folder", ["."], None),
    ("earlier-store", ["config/", "model-store/", "build-report.json"], None),
    ("checkout", ["README.md", "config/", "pyproject.toml"], "output {out} is a folder that holds other files (README.md, pyproject.toml), not a model store"),
    ("work-folder", ["model/", "notes.txt"], "output {out} is a folder that holds other files (model, notes.txt), not a model store"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("holds", "error"), [c[1:] for c in OUTPUT_FOLDERS], ids=[c[0] for c in OUTPUT_FOLDERS]
)
def test_build_writes_only_into_a_new_or_store_folder(
    tiny_bert: Path, tmp_path: Path, holds: list[str], error: str | None
) -> None:
    out = tmp_path / "out"
    for rel in holds:
        path = out / rel
        if rel.endswith("/") or rel == ".":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    code, stdout, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", str(out))
    if error is None:
        assert code == 0, stderr
        assert (out / "model-store" / "m.mar").is_file()
        return
    assert (code, stdout) == (2, "")
    assert stderr.splitlines()[-1] == (
        f"Error: {error.format(out=out)}; pass -o with a new folder (e.g. -o {out}-store) "
        "or an earlier build's OUT"
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("linked", ["config", "model-store"])
def test_build_refuses_an_output_whose_folders_are_links(
    tiny_bert: Path, tmp_path: Path, linked: str
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / linked).symlink_to(elsewhere, target_is_directory=True)
    code, stdout, stderr = _build_cli(str(tiny_bert), "--name", "m", "-o", str(out))
    assert (code, stdout) == (2, "")
    assert stderr.splitlines()[-1] == (
        f"Error: output {out} has {linked}/ as a symbolic link (to {elsewhere}): a build writes "
        f"only into its own folders; remove the link (rm {out / linked}) and rerun, or pass -o "
        "with a new folder"
    )
    assert list(elsewhere.iterdir()) == []


def test_build_refuses_to_write_into_the_model_folder(tiny_bert: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    code, _, stderr = _build_cli(str(model), "--name", "m", "-o", str(model))
    assert code == 2
    assert stderr.splitlines()[-1] == (
        f"Error: output {model} is the model folder itself; pass -o with a new folder "
        f"(e.g. -o {model}-store) or an earlier build's OUT"
    )
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_bert.iterdir())
