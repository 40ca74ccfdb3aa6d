"""Hostile files through every CLI error path: one `Error: ...` line naming the problem, exit
code 2, never a Python traceback. Deep nesting, integers past Python's 4300-digit limit, JSON
that is not an object, NaN ids and crafted safetensors headers, for `build` and
`predict --input` (and `bench --payload`)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.cli import cli

SCIBERT_PACK = str(Path(sys.executable).parent / "scibert-pack")
DEEP = 100_000  # nesting levels: far past Python's recursion limit
DIGITS = "7" * 5000  # past Python's 4300-digit int limit
NOWHERE = "http://127.0.0.1:9"  # nothing listens: every case must fail before any request

Breaker = Callable[[Path], None]


def _safetensors(header: object, data: bytes = b"") -> Breaker:
    """Replace model.safetensors by a file with this header (JSON, or raw bytes) and data."""

    def breaker(folder: Path) -> None:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)

    return breaker


def _config_text(text: str) -> Breaker:
    def breaker(folder: Path) -> None:
        (folder / "config.json").write_text(text, encoding="utf-8")

    return breaker


def _with_config_value(value: str) -> Breaker:
    """A config.json that is the real one plus a field holding `value` (raw JSON)."""

    def breaker(folder: Path) -> None:
        text = (folder / "config.json").read_text(encoding="utf-8").rstrip().removesuffix("}")
        (folder / "config.json").write_text(f'{text}, "hostile": {value}}}', encoding="utf-8")

    return breaker


def _set_id2label(folder: Path, id2label: dict[str, str]) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = id2label
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _index(text: str) -> Breaker:
    def breaker(folder: Path) -> None:
        (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text(text, encoding="utf-8")

    return breaker


def _f32(name: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}}


ST = "model.safetensors in {m} is not a valid safetensors file"
CONFIG = "config.json of {m} is not valid JSON"

BUILD_CASES: list[tuple[str, Breaker, str]] = [
    ("config-deeply-nested", _config_text("[" * DEEP + "]" * DEEP), f"{CONFIG} (nested too deeply"),
    ("config-nested-in-a-field", _with_config_value("[" * DEEP + "]" * DEEP), f"{CONFIG} (nested too deeply"),
    ("config-5000-digit-integer", _with_config_value(DIGITS), f"{CONFIG} (Exceeds the limit (4300 digits)"),
    ("config-label-key-5000-digits", lambda f: _set_id2label(f, {DIGITS: "a"}), "config.json of {m} has id2label keys that are not class indexes (['777"),
    ("config-a-list", _config_text("[]"), "config.json of {m} holds a list, not a JSON object"),
    ("config-bad-utf8", lambda f: (f / "config.json").write_bytes(b'{"a": "\xff"}'), f"{CONFIG} ('utf-8' codec can't decode byte 0xff"),
    ("index-deeply-nested", _index('{"a":' * DEEP), "model.safetensors.index.json in {m} is not valid JSON (nested too deeply"),
    ("index-5000-digit-integer", _index('{"weight_map": ' + DIGITS + "}"), "model.safetensors.index.json in {m} is not valid JSON (Exceeds the limit (4300 digits)"),
    ("index-a-list", _index("[]"), "model.safetensors.index.json in {m} is not a weight index (no weight_map)"),
    ("header-list", _safetensors([]), f"{ST} (the header is a JSON list, not an object)"),
    ("header-string", _safetensors("x"), f"{ST} (the header is a JSON str, not an object)"),
    ("header-deeply-nested", _safetensors(b"[" * 50_000), f"{ST} (nested too deeply"),
    ("header-5000-digit-integer", _safetensors(b'{"a": ' + DIGITS.encode() + b"}"), f"{ST} (Exceeds the limit (4300 digits)"),
    ("header-not-utf8", _safetensors(b'{"\xff": 1}'), f"{ST} ('utf-8' codec can't decode"),
    ("file-of-3-bytes", lambda f: (f / "model.safetensors").write_bytes(b"abc"), f"{ST} (3 bytes, too short for the 8-byte header length)"),
    ("header-length-past-the-end", lambda f: (f / "model.safetensors").write_bytes(struct.pack("<Q", 2**63) + b"{}"), f"{ST} (header length 9223372036854775808 past the end of the file)"),
    ("negative-end-offset", _safetensors(_f32("w", [0], 0, -5)), f"{ST} (tensor 'w' has data_offsets [0, -5], expected [begin, end] with 0 <= begin <= end)"),
    ("begin-after-end", _safetensors(_f32("w", [1], 8, 4), bytes(8)), f"{ST} (tensor 'w' has data_offsets [8, 4], expected [begin, end] with 0 <= begin <= end)"),
    ("offsets-not-a-pair", _safetensors(_f32("w", [1], 0, 4) | {"v": {"dtype": "F32", "shape": [1], "data_offsets": [4]}}, bytes(8)), f"{ST} (tensor 'v' has data_offsets [4], expected [begin, end] with 0 <= begin <= end)"),
    ("boolean-offset", _safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [False, 4]}}, bytes(4)), f"{ST} (tensor 'w' has data_offsets [False, 4], expected [begin, end] with 0 <= begin <= end)"),
    ("unknown-dtype", _safetensors({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16)), f"{ST} (tensor 'w' has unknown dtype 'F128')"),
    ("negative-shape", _safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)), f"{ST} (tensor 'w' has shape [-1], not a list of sizes)"),
    ("size-not-shape-times-dtype", _safetensors(_f32("w", [2, 2], 0, 15), bytes(15)), f"{ST} (tensor 'w' of shape [2, 2] and dtype F32 needs 16 bytes, its data_offsets [0, 15] span 15)"),
    ("shape-of-thousands-of-huge-sizes", _safetensors(_f32("w", [10**400] * 5000, 0, 4), bytes(4)), f"{ST} (tensor 'w' of shape [10000000000000000000000000000000000000000000000000000000... and dtype F32 needs more than 4 bytes, its data_offsets [0, 4] span 4)"),
    ("overlapping-tensors", _safetensors(_f32("a", [4], 0, 16) | _f32("b", [4], 8, 24), bytes(24)), f"{ST} (tensor 'b' starts at byte 8 of the data, where 16 was expected: it overlaps the tensor before it)"),
    ("gap-between-tensors", _safetensors(_f32("a", [1], 0, 4) | _f32("b", [1], 8, 12), bytes(12)), f"{ST} (tensor 'b' starts at byte 8 of the data, where 4 was expected: it leaves a gap)"),
    ("bytes-after-the-last-tensor", _safetensors(_f32("a", [1], 0, 4), bytes(12)), f"{ST} (8 bytes after the last tensor: the header does not describe the whole file)"),
    ("data-past-the-end", _safetensors(_f32("a", [4], 0, 16), bytes(8)), "model.safetensors in {m} is truncated: "),
    ("tensor-described-by-a-number", _safetensors({"w": 5}), f"{ST} (tensor 'w' is described by a int)"),
    ("metadata-not-strings", _safetensors({"__metadata__": {"format": 1}}), f"{ST} (__metadata__ is not an object of strings)"),
]  # fmt: skip


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert len(lines[0]) < 1000  # a hostile value is cut short, not echoed whole
    assert lines[0].startswith("Error: ")
    return lines[0].removeprefix("Error: ")


@pytest.mark.parametrize(
    ("breaker", "expected"), [c[1:] for c in BUILD_CASES], ids=[c[0] for c in BUILD_CASES]
)
def test_build_refuses_hostile_model_files(
    model_copy: Callable[..., Path], tmp_path: Path, breaker: Breaker, expected: str
) -> None:
    folder = model_copy()
    breaker(folder)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(folder), "--name", "m", "-o", str(out), "-q"])
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr).startswith(expected.format(m=folder))
    assert result.stdout == ""
    assert not out.exists()


def _jsonl(*lines: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "in.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    return make


GOOD = '{"text": "the protein folds"}'

PREDICT_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("id-5000-digits", _jsonl(GOOD, '{"id": ' + DIGITS + ', "text": "x"}'), "{p} line 2 is not JSON we can read (Exceeds the limit (4300 digits) for integer string conversion): "),
    ("line-deeply-nested", _jsonl('{"b":' + "[" * 3000), "{p} line 1 is not JSON we can read (nested too deeply (more levels than Python's JSON parser handles)): "),
    ("id-nan", _jsonl('{"id": NaN, "text": "x"}'), "{p} line 1: id NaN is not a JSON number (NaN and Infinity are not JSON, and result lines must be strict JSON); give the id as a string, e.g. \"id\": \"NaN\", or as a finite number"),
    ("id-infinity", _jsonl(GOOD, '{"id": -Infinity, "text": "x"}'), "{p} line 2: id -Infinity is not a JSON number (NaN and Infinity are not JSON, and result lines must be strict JSON); give the id as a string, e.g. \"id\": \"-Infinity\", or as a finite number"),
    ("id-an-object", _jsonl('{"id": {"a": 1}, "text": "x"}'), "{p} line 1: id is a JSON object; ids must be strings, numbers, booleans or null; give each record a string or numeric id"),
    ("text-lone-surrogate", _jsonl(GOOD, '{"text": "bad \\ud800 text"}'), "{p} line 2: field 'text' holds a lone surrogate escape such as \\ud800 (half of a UTF-16 pair), which is not a character and cannot be written as UTF-8; fix the escape"),
    ("id-lone-surrogate", _jsonl('{"id": "\\udfff", "text": "x"}'), "{p} line 1: id holds a lone surrogate escape"),
    ("record-a-list", _jsonl("[1]"), "{p} line 1 has no 'text' field (found: list); name the field holding the text with --text-field"),
    ("not-utf8", lambda tmp: (tmp / "in.jsonl").write_bytes(b'{"text": "\xff"}\n') and tmp / "in.jsonl", "input file {p} is not UTF-8 text (invalid start byte at byte 10); convert it to UTF-8, e.g. iconv -t UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "expected"), [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_input_refuses_hostile_lines(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    source = make(tmp_path)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli,
        ["predict", "--url", NOWHERE, "--model", "m", "--input", str(source), "--output", str(out)],
    )
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr).startswith(expected.format(p=source))
    assert not out.exists()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"row": 0, "text": "x", "id": ' + DIGITS + ', "label": "a"}', "is not a predict result"),
        ('{"row": 0, "text": "x", "label": ' + "[" * DEEP + "]" * DEEP + "}", "is not a predict result"),
    ],
    ids=["id-5000-digits", "deeply-nested"],
)  # fmt: skip
def test_resume_refuses_a_hostile_output_file(tmp_path: Path, line: str, expected: str) -> None:
    source = _jsonl(GOOD, GOOD)(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_text(line + "\n" + line + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["predict", "--url", NOWHERE, "--model", "m", "--input", str(source), "--output", str(out)],
    )
    assert result.exit_code == 2, result.output
    assert expected in _one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("[" * DEEP, "is not JSON (nested too deeply"),
        ('{"a": ' + DIGITS + "}", "is not JSON (Exceeds the limit (4300 digits)"),
    ],
    ids=["deeply-nested", "5000-digit-integer"],
)
def test_bench_refuses_a_hostile_payload(tmp_path: Path, payload: str, expected: str) -> None:
    path = tmp_path / "payload.json"
    path.write_text(payload, encoding="utf-8")
    args = ["bench", "--url", NOWHERE, "--model", "m", "--payload", str(path), "--requests", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert expected in _one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["build", "{model}", "--name", "tiny\n", "-o", "{tmp}/out"], "model name 'tiny\\n' is not allowed"),
        (["build", "{model}", "--name", "n" * 300, "-o", "{tmp}/out"], "is 300 characters long, more than the 200 allowed"),
        (["predict", "--url", NOWHERE, "--model", "m", "--input", "{tmp}/in.jsonl"], "is not JSON we can read (Exceeds the limit (4300 digits)"),
        (["predict", "hello", "--url", "127.0.0.1:8085", "--model", "m"], "--url '127.0.0.1:8085' is not an http(s) URL"),
        (["explain", "hello", "--url", "localhost:8085", "--model", "m"], "--url 'localhost:8085' is not an http(s) URL"),
        (["predict", "hello", "--url", NOWHERE, "--model", "m", "--timeout", "0"], "--timeout 0 is not a number of seconds above 0"),
        (["explain", "hello", "--url", NOWHERE, "--model", "m", "--timeout", "-5"], "--timeout -5 is not a number of seconds above 0"),
    ],
    ids=["name-newline", "name-300-chars", "id-5000-digits", "predict-url-without-scheme", "explain-url-without-scheme", "timeout-0", "timeout-negative"],
)  # fmt: skip
def test_real_command_line_prints_no_traceback(
    tiny_bert: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    """The installed entry point, as a user runs it (CliRunner cannot see interpreter output)."""
    _jsonl('{"id": ' + DIGITS + ', "text": "x"}')(tmp_path)
    argv = [a.format(model=tiny_bert, tmp=tmp_path) for a in args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [SCIBERT_PACK, *argv], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 2, done.stderr
    assert expected in _one_error_line(done.stderr)
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def built_store(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scibert_pack.archiver.build import build
    from scibert_pack.archiver.settings import BuildSettings

    out = tmp_path_factory.mktemp("store") / "out"
    build(tiny_bert, BuildSettings(name="m", profile="local"), out)
    return out


def _report(text: str) -> Callable[[Path], None]:
    def breaker(store: Path) -> None:
        (store / "build-report.json").write_text(text, encoding="utf-8")

    return breaker


def _snapshot(value: str) -> Callable[[Path], None]:
    def breaker(store: Path) -> None:
        config = store / "config" / "config.properties"
        lines = config.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if not line.startswith("model_snapshot=")]
        config.write_text("\n".join([*kept, f"model_snapshot={value}"]) + "\n", encoding="utf-8")

    return breaker


def _unchanged(store: Path) -> None:
    pass


REPORT = "{store}/build-report.json is not readable JSON"
SNAPSHOT = "model_snapshot in {store}/config/config.properties is not a TorchServe snapshot"

STORE_CASES: list[tuple[str, list[str], Callable[[Path], None], str]] = [
    ("manifest-report-deeply-nested", ["manifest", "--from-store", "{store}", "--storage-uri", "s3://models/m/"], _report("[" * DEEP), f"{REPORT} (nested too deeply"),
    ("manifest-report-5000-digits", ["manifest", "--from-store", "{store}", "--storage-uri", "s3://models/m/"], _report('{"a": ' + DIGITS + "}"), f"{REPORT} (Exceeds the limit (4300 digits)"),
    ("manifest-snapshot-deeply-nested", ["manifest", "--from-store", "{store}", "--storage-uri", "s3://models/m/"], _snapshot('{"models": ' + "[" * DEEP), f"{SNAPSHOT} (nested too deeply"),
    ("upload-report-deeply-nested", ["upload", "{store}", "{tmp}/dest"], _report("[" * DEEP), f"{REPORT} (nested too deeply"),
    ("serve-snapshot-5000-digits", ["serve", "{store}"], _snapshot('{"models": ' + DIGITS + "}"), f"{SNAPSHOT} (Exceeds the limit (4300 digits)"),
    ("manifest-output-in-the-store", ["manifest", "--from-store", "{store}", "--storage-uri", "s3://models/m/", "-o", "{store}/config/config.properties"], _unchanged, "output {store}/config/config.properties is inside the model store {store}: it would overwrite or join the store's files, which upload sends as the model; write it beside the store, e.g. {tmp}/config.properties"),
    ("manifest-dockerfile-in-the-store", ["manifest", "--from-store", "{store}", "--storage-uri", "s3://models/m/", "--dockerfile", "{store}/model-store/m.mar"], _unchanged, "dockerfile {store}/model-store/m.mar is inside the model store {store}"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "breaker", "expected"), [c[1:] for c in STORE_CASES], ids=[c[0] for c in STORE_CASES]
)
def test_commands_refuse_a_hostile_store(
    built_store: Path,
    tmp_path: Path,
    args: list[str],
    breaker: Callable[[Path], None],
    expected: str,
) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(built_store, store)
    breaker(store)
    argv = [a.format(store=store, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, argv)
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr).startswith(expected.format(store=store, tmp=tmp_path))
    assert not (tmp_path / "dest").exists()
    if breaker is _unchanged:  # nothing in the store was touched
        assert sorted(p.read_bytes() for p in store.rglob("*") if p.is_file()) == sorted(
            p.read_bytes() for p in built_store.rglob("*") if p.is_file()
        )
