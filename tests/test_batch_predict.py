"""`scibert-pack predict --input`: batch predictions against a real TorchServe on the tiny model:
every input format, order, per-row refusals, retries through an injected transport, resume."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from requests.adapters import HTTPAdapter
from served import serving
from tiny_models import CORPUS, LABELS

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.errors import ClientError, InputError
from scibert_pack.serving.batch import BatchPredictor, BatchProgress, BatchSettings
from scibert_pack.serving.batch_input import input_format, read_texts
from scibert_pack.serving.batch_output import ResumableOutput
from scibert_pack.serving.client import InferenceClient
from scibert_pack.serving.server import TorchServeProcess

TEXTS = [line.rstrip(" .") for line in CORPUS] * 3  # 30 rows


@pytest.fixture(scope="module")
def server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    settings = BuildSettings(name="tiny", batch_size=8, max_batch_delay_ms=5, profile="local")
    with serving(tiny_bert, tmp_path_factory.mktemp("served"), settings) as running:
        yield running


class Recorder(HTTPAdapter):
    """A real transport that records the texts of each request and can fail the first ones."""

    def __init__(self, fail_first: int = 0, fail_with: str = "connection") -> None:
        super().__init__(pool_maxsize=16)
        self.fail_first = fail_first
        self.fail_with = fail_with
        self.sent: list[list[str]] = []
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        body = json.loads(request.body or b"{}")
        with self._lock:
            self.sent.append(list(body["inputs"][0]["data"]))
            failing = len(self.sent) <= self.fail_first
        if failing and self.fail_with == "connection":
            raise requests.ConnectionError("injected: connection reset")
        if failing:
            response = requests.Response()
            response.status_code = 503
            response._content = b'{"message": "injected: worker restarting"}'
            response.request = request
            return response
        return super().send(request, **kwargs)

    def texts_sent(self) -> list[str]:
        return [text for texts in self.sent for text in texts]


def _client(server: TorchServeProcess, adapter: HTTPAdapter) -> InferenceClient:
    session = requests.Session()
    session.mount("http://", adapter)
    return InferenceClient(server.inference_url, "tiny", session=session, timeout_s=60)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _check_predictions(
    records: list[dict[str, Any]], texts: list[str], rows: list[int] | None = None
) -> None:
    assert [r["row"] for r in records] == (rows or list(range(len(texts))))
    assert [r["text"] for r in records] == texts
    for r in records:
        assert r["label"] in LABELS.values()
        assert set(r["probabilities"]) == set(LABELS.values())
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert max(r["probabilities"], key=r["probabilities"].get) == r["label"]
        assert r["truncated"] is False


def _write_input(path: Path, texts: list[str]) -> Path:
    if path.suffix == ".txt":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text(
            "".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)),
            encoding="utf-8",
        )
    else:
        rows = "".join(f'{i},"{t}"\n' for i, t in enumerate(texts))
        path.write_text("id,abstract\n" + rows, encoding="utf-8")
    return path


# --- through the CLI, one test per input format ---------------------------------------------


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "field_option"),
    [("in.txt", []), ("in.jsonl", ["--text-field", "body"]), ("in.csv", ["--column", "abstract"])],
    ids=["lines", "jsonl", "csv"],
)
def test_cli_batch_per_format(
    server: TorchServeProcess, tmp_path: Path, name: str, field_option: list[str]
) -> None:
    source = _write_input(tmp_path / name, TEXTS)
    out = tmp_path / "out.jsonl"
    args = ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source)]
    result = CliRunner().invoke(
        cli, [*args, *field_option, "--output", str(out), "--concurrency", "4"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"wrote 30 rows to {out}" in result.stderr
    assert "30/30 rows" in result.stderr
    _check_predictions(_records(out), TEXTS)


@pytest.mark.server
@pytest.mark.slow
def test_cli_batch_to_stdout(server: TorchServeProcess, tmp_path: Path) -> None:
    source = _write_input(tmp_path / "in.txt", TEXTS[:5])
    result = CliRunner().invoke(
        cli, ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source)]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    _check_predictions(records, TEXTS[:5])


@pytest.mark.server
@pytest.mark.slow
def test_refused_row_keeps_its_neighbours(server: TorchServeProcess, tmp_path: Path) -> None:
    texts = [TEXTS[0], TEXTS[1], "   ", TEXTS[3], TEXTS[4]]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli,
        ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source),
         "--output", str(out), "--batch-texts", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = _records(out)
    assert re.fullmatch(
        rf"wrote 5 rows to {re.escape(str(out))} in [0-9.]+ s "
        r"\(0 already done, 1 refused by the server\)",
        result.stderr.splitlines()[-1],
    )
    assert records[2] == {
        "row": 2,
        "text": "   ",
        "error": f"{server.inference_url}/v2/models/tiny/infer answered 400: "
        "text 0 is empty or whitespace; send some words",
    }
    _check_predictions(records[:2] + records[3:], texts[:2] + texts[3:], [0, 1, 3, 4])


# --- the library: retries and resume ----------------------------------------------------------


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("fail_with", ["connection", "503"])
def test_transient_failures_are_retried(
    server: TorchServeProcess, tmp_path: Path, fail_with: str
) -> None:
    adapter = Recorder(fail_first=2, fail_with=fail_with)
    waits: list[float] = []
    predictor = BatchPredictor(
        _client(server, adapter),
        BatchSettings(concurrency=1, texts_per_request=4, retries=3, backoff_s=0.25),
        sleep=waits.append,
    )
    out = ResumableOutput(tmp_path / "out.jsonl", 4)
    final = predictor.run(TEXTS[:4], out)
    out.close()
    assert (final.written, final.errors, final.retries) == (4, 0, 2)
    assert waits == [0.25, 0.5]
    assert adapter.sent == [TEXTS[:4]] * 3
    _check_predictions(_records(tmp_path / "out.jsonl"), TEXTS[:4])


@pytest.mark.server
@pytest.mark.slow
def test_gives_up_after_the_retries(server: TorchServeProcess, tmp_path: Path) -> None:
    adapter = Recorder(fail_first=10)
    predictor = BatchPredictor(
        _client(server, adapter),
        BatchSettings(concurrency=1, texts_per_request=4, retries=2),
        sleep=lambda _: None,
    )
    out = ResumableOutput(tmp_path / "out.jsonl", 4)
    with pytest.raises(ClientError) as caught:
        predictor.run(TEXTS[:4], out)
    out.close()
    assert str(caught.value) == (
        f"cannot reach {server.inference_url} (ConnectionError) (gave up after 2 retries); "
        "check the server, then rerun the same command: finished rows are kept and skipped"
    )
    assert len(adapter.sent) == 3
    assert (tmp_path / "out.jsonl").read_text() == ""


@pytest.mark.server
@pytest.mark.slow
def test_unknown_model_stops_the_run(server: TorchServeProcess, tmp_path: Path) -> None:
    source = _write_input(tmp_path / "in.txt", TEXTS[:3])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli,
        ["predict", "--url", server.inference_url, "--model", "nope", "--input", str(source),
         "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(
        f"Error: {server.inference_url}/v2/models/nope/infer answered 404: "
    )
    assert result.stderr.splitlines()[-1].endswith(
        "; check --model (is 'nope' the name the store serves?) and --url"
    )
    assert out.read_text() == ""


class Interrupt(Exception):
    pass


@pytest.mark.server
@pytest.mark.slow
def test_resume_skips_finished_rows(server: TorchServeProcess, tmp_path: Path) -> None:
    out_path = tmp_path / "out.jsonl"
    settings = BatchSettings(concurrency=2, texts_per_request=3)

    def interrupt(progress: BatchProgress) -> None:
        if progress.written >= 10:
            raise Interrupt  # like Ctrl-C between two writes

    first = Recorder()
    out = ResumableOutput(out_path, len(TEXTS))
    with pytest.raises(Interrupt):
        BatchPredictor(_client(server, first), settings, progress=interrupt).run(TEXTS, out)
    out.close()
    kept = _records(out_path)
    assert len(kept) >= 10 and len(kept) < len(TEXTS)
    _check_predictions(kept, TEXTS[: len(kept)])
    # A crash in the middle of a write leaves a partial line: it is cut off and redone.
    with out_path.open("a") as file:
        file.write('{"row": ' + str(len(kept)) + ', "text": "the prot')

    second = Recorder()
    out = ResumableOutput(out_path, len(TEXTS))
    assert out.finished == frozenset(range(len(kept)))
    final = BatchPredictor(_client(server, second), settings).run(TEXTS, out)
    out.close()
    assert (final.skipped, final.written) == (len(kept), len(TEXTS) - len(kept))
    # Each unfinished row is sent exactly once; two requests in flight may go out in any order.
    assert sorted(second.texts_sent()) == sorted(TEXTS[len(kept) :])
    _check_predictions(_records(out_path), TEXTS)


# --- bad input: each error names the bad value and the fix ------------------------------------


@pytest.fixture
def csv_without_column(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    path.write_text("id,abstract\n1,hello\n")
    return path


@pytest.fixture
def empty_lines(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n  \n\n")
    return path


@pytest.fixture
def latin1_lines(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    return path


@pytest.fixture
def jsonl_without_field(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n{"body": "b", "id": 2}\n')
    return path


@pytest.fixture
def jsonl_not_json(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\nplain text\n')
    return path


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        (
            "csv_without_column",
            "{path} has no column 'text' (columns found: id, abstract); "
            "name the column holding the text with --column",
        ),
        (
            "empty_lines",
            "input file {path} holds no texts (read as lines); "
            "give a file with at least one text, or the right --format",
        ),
        (
            "latin1_lines",
            "input file {path} is not UTF-8 text (invalid continuation byte at "
            "byte 3); convert it to UTF-8, e.g. iconv -t UTF-8",
        ),
        (
            "jsonl_without_field",
            "{path} line 2 has no 'text' field (found: body, id); "
            "name the field holding the text with --text-field",
        ),
        (
            "jsonl_not_json",
            "{path} line 2 is not JSON (Expecting value): 'plain text'; "
            "give one JSON object per line, or pass --format lines",
        ),
    ],
    ids=["unknown-column", "empty", "not-utf8", "missing-field", "not-json"],
)
def test_bad_input(request: pytest.FixtureRequest, fixture: str, message: str) -> None:
    path: Path = request.getfixturevalue(fixture)
    with pytest.raises(InputError) as caught:
        read_texts(path, input_format(path), "text")
    assert str(caught.value) == message.format(path=path)


def test_cli_bad_input_exits_2_before_any_request(csv_without_column: Path) -> None:
    # Port 9 (discard) is never served here: the input is checked before the client connects.
    result = CliRunner().invoke(
        cli,
        ["predict", "--url", "http://127.0.0.1:9", "--model", "m", "--input",
         str(csv_without_column)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "has no column 'text' (columns found: id, abstract)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a text", "--input", "x.txt"], "give TEXTS or --input, not both"),
        ([], "give some TEXTS to classify, or --input FILE"),
        (["a text", "--output", "o.jsonl"], "--output goes with --input"),
    ],
    ids=["both", "neither", "output-without-input"],
)
def test_cli_usage(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["predict", "--model", "m", *args])
    assert result.exit_code == 2
    assert f"Error: {message}" in result.stderr


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot tell the format of .*in\.dat .*'\.dat'"):
        input_format(tmp_path / "in.dat")
    assert input_format(tmp_path / "in.dat", "csv") == "csv"


def test_output_of_another_input(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"row": 0, "label": "a"}\n{"row": 7, "label": "b"}\n')
    with pytest.raises(InputError) as caught:
        ResumableOutput(out, 5)
    assert str(caught.value) == (
        f"output file {out} has a result for row 7 but the input has only 5 texts: it belongs "
        "to another input; choose another --output, or delete the file to start over"
    )


def test_output_not_from_predict(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"row": 0}\nsomething else\n{"row": 1}\n')
    with pytest.raises(InputError, match=r"line 2 is not a predict result: b'something else'"):
        ResumableOutput(out, 5)
