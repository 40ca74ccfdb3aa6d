"""`scibert-pack predict --input`: batch predictions against a real TorchServe on the tiny model:
every input format, order, per-row refusals, retries through an injected transport, resume
(5xx rows asked again, an output of another input refused), input lines and ids carried into
every result, and Ctrl-C that does not wait for requests in flight."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from requests.adapters import HTTPAdapter
from support.tiny_models import CORPUS, LABELS

from scibert_pack.cli import cli
from scibert_pack.client.batch import (
    BatchPredictor,
    BatchProgress,
    BatchSettings,
    _texts_that_fit,
)
from scibert_pack.client.batch_input import InputRow, input_format, read_input, rows_of
from scibert_pack.client.batch_output import ResumableOutput
from scibert_pack.client.inference_client import InferenceClient, ServerLimit, _server_limit
from scibert_pack.errors import ClientError, InputError
from scibert_pack.serving.server import TorchServeProcess

TEXTS = [line.rstrip(" .") for line in CORPUS] * 3  # 30 rows
ROWS = rows_of(TEXTS)
SCIBERT_PACK = str(Path(sys.executable).parent / "scibert-pack")


@pytest.fixture(scope="module")
def server(tiny_server: TorchServeProcess) -> TorchServeProcess:
    return tiny_server  # shared with other modules: send requests only


class Recorder(HTTPAdapter):
    """A real transport that records the texts of each request and can fail the first ones."""

    def __init__(
        self, fail_first: int = 0, fail_with: str = "connection", fail_text: str | None = None
    ) -> None:
        super().__init__(pool_maxsize=16)
        self.fail_first = fail_first
        self.fail_with = fail_with
        self.fail_text = fail_text  # every request holding this text fails (with fail_with)
        self.sent: list[list[str]] = []
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        body = json.loads(request.body or b"{}")
        texts = list(body["inputs"][0]["data"])
        with self._lock:
            self.sent.append(texts)
            failing = len(self.sent) <= self.fail_first or self.fail_text in texts
        if failing and self.fail_with == "connection":
            raise requests.ConnectionError("injected: connection reset")
        if failing:
            status = int(self.fail_with)
            response = requests.Response()
            response.status_code = status
            response._content = f'{{"message": "injected: {status}"}}'.encode()
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
    records: list[dict[str, Any]],
    texts: list[str],
    rows: list[int] | None = None,
    lines: list[int] | None = None,
    ids: list[object] | None = None,
) -> None:
    assert [r["row"] for r in records] == (rows or list(range(len(texts))))
    assert [r["text"] for r in records] == texts
    assert [r.get("line") for r in records] == (lines or [None] * len(texts))
    assert [r.get("id") for r in records] == (ids or [None] * len(texts))
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
    ("name", "field_option", "first_line", "ids"),
    [
        ("in.txt", [], 1, None),
        ("in.jsonl", ["--text-field", "body"], 1, list(range(30))),
        ("in.csv", ["--column", "abstract"], 2, [str(i) for i in range(30)]),
    ],
    ids=["lines", "jsonl", "csv"],
)
def test_cli_batch_per_format(
    server: TorchServeProcess,
    tmp_path: Path,
    name: str,
    field_option: list[str],
    first_line: int,
    ids: list[object] | None,
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
    _check_predictions(
        _records(out), TEXTS, lines=list(range(first_line, first_line + 30)), ids=ids
    )


@pytest.mark.server
@pytest.mark.slow
def test_cli_batch_to_stdout(server: TorchServeProcess, tmp_path: Path) -> None:
    source = _write_input(tmp_path / "in.txt", TEXTS[:5])
    result = CliRunner().invoke(
        cli, ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source)]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    _check_predictions(records, TEXTS[:5], lines=[1, 2, 3, 4, 5])


@pytest.mark.server
@pytest.mark.slow
def test_refused_row_keeps_its_neighbours(server: TorchServeProcess, tmp_path: Path) -> None:
    texts = [TEXTS[0], TEXTS[1], "\x07\x07", TEXTS[3], TEXTS[4]]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli,
        ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source),
         "--output", str(out), "--batch-texts", "5"],
    )  # fmt: skip
    assert result.exit_code == 4, result.output  # the job went through, some rows failed
    records = _records(out)
    assert re.fullmatch(
        rf"wrote 5 rows to {re.escape(str(out))} in [0-9.]+ s "
        r"\(0 already done, 1 refused by the server\)",
        result.stderr.splitlines()[-1],
    )
    assert records[2] == {
        "row": 2,
        "line": 3,
        "text": "\x07\x07",
        "error": f"{server.inference_url}/v2/models/tiny/infer answered 400: "
        "text 0 has no printable characters (only control or format characters); send some words",
        "status": 400,
    }
    _check_predictions(
        records[:2] + records[3:], texts[:2] + texts[3:], [0, 1, 3, 4], lines=[1, 2, 4, 5]
    )
    # A rerun asks nothing (a refusal is final) and still says, by its exit code, that a row failed.
    again = CliRunner().invoke(
        cli,
        ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source),
         "--output", str(out), "--batch-texts", "5"],
    )  # fmt: skip
    assert again.exit_code == 4, again.output
    assert again.stderr.splitlines()[-2:] == [
        again.stderr.splitlines()[-2],
        "1 rows refused by the server in an earlier run keep their error records",
    ]
    assert "(5 already done, 0 refused by the server)" in again.stderr.splitlines()[-2]
    assert _records(out) == records


DEEP_ROW = '{"b":' + "[" * 3000  # a text that breaks the whole request it is sent in


@pytest.mark.server
@pytest.mark.slow
def test_row_that_breaks_its_request_fails_alone_and_again_on_rerun(
    server: TorchServeProcess, tmp_path: Path
) -> None:
    texts = [TEXTS[0], TEXTS[1], DEEP_ROW, TEXTS[3]]
    source = _write_input(tmp_path / "in.txt", texts)
    out = tmp_path / "out.jsonl"
    args = ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source),
            "--output", str(out), "--retries", "1"]  # fmt: skip
    for run in ("first", "rerun"):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 4, (run, result.output)
        assert "Traceback" not in result.output
        records = _records(out)
        assert [r["row"] for r in records] == [0, 1, 2, 3]
        _check_predictions(
            [records[i] for i in (0, 1, 3)], [texts[i] for i in (0, 1, 3)], [0, 1, 3], [1, 2, 4]
        )
        bad = records[2]
        assert (bad["line"], bad["text"]) == (3, DEEP_ROW)
        assert isinstance(bad["status"], int) and 400 <= bad["status"] < 600
        assert bad["error"].startswith(
            f"{server.inference_url}/v2/models/tiny/infer answered {bad['status']}: "
        )
        if bad["status"] < 500:  # refused: final, the rerun asks nothing
            assert "rows refused by the server in an earlier run" in result.stderr or run == "first"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize(
    ("fail_with", "bad", "sent"),
    [
        ("503", 5, [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3], [4, 5, 6, 7], [4, 5], [4], [5], [6, 7]]),
        ("500", 0, [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3], [0, 1], [0], [1], [2, 3], [4, 5, 6, 7]]),
        ("400", 7, [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3], [4, 5, 6, 7], [4, 5], [6, 7], [6], [7]]),
    ],
    ids=["503-bisected", "500-bisected", "400-bisected"],
)  # fmt: skip
def test_failed_request_is_bisected_down_to_the_bad_row(
    server: TorchServeProcess, tmp_path: Path, fail_with: str, bad: int, sent: list[list[int]]
) -> None:
    adapter = Recorder(fail_text=TEXTS[bad], fail_with=fail_with)
    predictor = BatchPredictor(
        _client(server, adapter),
        BatchSettings(concurrency=1, texts_per_request=8, retries=0),
        sleep=lambda _: None,
    )
    out = ResumableOutput(tmp_path / "out.jsonl", ROWS[:8])
    final = predictor.run(ROWS[:8], out)
    out.close()
    assert adapter.sent == [[TEXTS[i] for i in rows] for rows in sent]
    assert (final.written, final.errors) == (8, 1)
    records = _records(tmp_path / "out.jsonl")
    assert records[bad]["status"] == int(fail_with)
    good = [i for i in range(8) if i != bad]
    _check_predictions([records[i] for i in good], [TEXTS[i] for i in good], good)


@pytest.mark.server
@pytest.mark.slow
def test_rows_failing_alone_with_nothing_answered_stop_the_run(
    server: TorchServeProcess, tmp_path: Path
) -> None:
    """A server that fails every request: bisecting stops after 3 single rows, not every row."""
    adapter = Recorder(fail_first=1000, fail_with="503")
    predictor = BatchPredictor(
        _client(server, adapter),
        BatchSettings(concurrency=1, texts_per_request=4, retries=0),
        sleep=lambda _: None,
    )
    out = ResumableOutput(tmp_path / "out.jsonl", ROWS)
    with pytest.raises(ClientError) as caught:
        predictor.run(ROWS, out)
    out.close()
    assert str(caught.value) == (
        f"{server.inference_url}/v2/models/tiny/infer answered 503: injected: 503 (3 rows in a "
        "row failed alone on the server after 0 retries each, with nothing answered between "
        "them: the server looks down); check the server's logs, then rerun the same command: "
        "finished rows are kept and skipped"
    )
    # The first chunk, bisected until the third row failed alone (the next chunk may have
    # started meanwhile: nothing waits for requests in flight).
    assert adapter.sent[:6] == [
        TEXTS[0:4], TEXTS[0:2], [TEXTS[0]], [TEXTS[1]], TEXTS[2:4], [TEXTS[2]]
    ]  # fmt: skip


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
    out = ResumableOutput(tmp_path / "out.jsonl", ROWS[:4])
    final = predictor.run(ROWS[:4], out)
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
    out = ResumableOutput(tmp_path / "out.jsonl", ROWS[:4])
    with pytest.raises(ClientError) as caught:
        predictor.run(ROWS[:4], out)
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
        "; check --model-name (is 'nope' the name the store serves?) and --url"
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
    out = ResumableOutput(out_path, ROWS)
    with pytest.raises(Interrupt):
        BatchPredictor(_client(server, first), settings, progress=interrupt).run(ROWS, out)
    out.close()
    kept = _records(out_path)
    assert len(kept) >= 10 and len(kept) < len(TEXTS)
    _check_predictions(kept, TEXTS[: len(kept)])
    # A crash in the middle of a write leaves a partial line: it is cut off and redone.
    with out_path.open("a") as file:
        file.write('{"row": ' + str(len(kept)) + ', "text": "the prot')

    second = Recorder()
    out = ResumableOutput(out_path, ROWS)
    assert out.finished == frozenset(range(len(kept)))
    final = BatchPredictor(_client(server, second), settings).run(ROWS, out)
    out.close()
    assert (final.skipped, final.written) == (len(kept), len(TEXTS) - len(kept))
    # Each unfinished row is sent exactly once; two requests in flight may go out in any order.
    assert sorted(second.texts_sent()) == sorted(TEXTS[len(kept) :])
    _check_predictions(_records(out_path), TEXTS)


@pytest.mark.server
@pytest.mark.slow
def test_server_failures_are_asked_again_on_resume(
    server: TorchServeProcess, tmp_path: Path
) -> None:
    # Row 2 fails with a 500 on every try; row 3 is refused by the server (400, final).
    texts = [*TEXTS[:3], "\x07", *TEXTS[4:6]]
    rows = rows_of(texts)
    out_path = tmp_path / "out.jsonl"
    settings = BatchSettings(concurrency=2, texts_per_request=3, retries=1)
    failing = Recorder(fail_text=TEXTS[2], fail_with="500")
    out = ResumableOutput(out_path, rows)
    first = BatchPredictor(_client(server, failing), settings, sleep=lambda _: None).run(rows, out)
    out.close()
    assert (first.written, first.errors, first.server_errors, first.refused) == (6, 2, 1, 1)
    records = _records(out_path)
    assert [(r["row"], r.get("status")) for r in records if "error" in r] == [(2, 500), (3, 400)]
    assert (
        records[2]["error"]
        == f"{server.inference_url}/v2/models/tiny/infer answered 500: injected: 500"
    )

    healthy = Recorder()
    out = ResumableOutput(out_path, rows)
    assert (out.finished, out.retried) == (frozenset({0, 1, 3, 4, 5}), frozenset({2}))
    second = BatchPredictor(_client(server, healthy), settings).run(rows, out)
    out.close()
    assert (second.skipped, second.written, second.errors) == (5, 1, 0)
    assert healthy.sent == [[TEXTS[2]]]  # only the 5xx row; the 400 row stays as it was
    records = _records(out_path)
    assert [r["row"] for r in records] == [0, 1, 2, 3, 4, 5]  # back in input order
    assert records[3]["status"] == 400
    kept = records[:3] + records[4:]
    _check_predictions(kept, texts[:3] + texts[4:], [0, 1, 2, 4, 5])


CSV_WITH_HOLES = (
    "id,abstract\n"  # line 1
    f"a1,{TEXTS[0]}\n"  # 2
    "a2,\n"  # 3: empty, skipped
    f"a3,{TEXTS[1]}\n"  # 4
    "\n"  # 5: a blank line is no record
    'a4,"   "\n'  # 6: whitespace, skipped
    'a5,"cells divide\nunder the microscope"\n'  # 7-8: one record over two lines
    f"a6,{TEXTS[2]}\n"  # 9
)


@pytest.mark.server
@pytest.mark.slow
def test_empty_csv_rows_are_reported_and_shift_nothing(
    server: TorchServeProcess, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(CSV_WITH_HOLES, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli,
        ["predict", "--url", server.inference_url, "--model", "tiny", "--input", str(source),
         "--column", "abstract", "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"skipped 2 records of {source} with an empty 'abstract' (lines 3, 6); each result "
        "carries its input line"
    )
    texts = [TEXTS[0], TEXTS[1], "cells divide\nunder the microscope", TEXTS[2]]
    _check_predictions(_records(out), texts, lines=[2, 4, 7, 9], ids=["a1", "a3", "a5", "a6"])


# --- Ctrl-C: no waiting for requests in flight ------------------------------------------------


class _SlowServer(BaseHTTPRequestHandler):
    """A v2 infer endpoint that answers at once, except for the text "hang" (until released)."""

    release = threading.Event()
    hanging = threading.Event()

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        texts = request["inputs"][0]["data"]
        if "hang" in texts:
            type(self).hanging.set()
            type(self).release.wait(timeout=120)
        body = {
            "outputs": [
                {
                    "name": "label",
                    "datatype": "BYTES",
                    "shape": [len(texts)],
                    "data": ["x"] * len(texts),
                },
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": [len(texts), 2],
                    "data": [0.9, 0.1] * len(texts),
                },
            ],
            "parameters": {"labels": ["x", "y"], "truncated": [False] * len(texts)},
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    _SlowServer.release.clear()
    _SlowServer.hanging.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowServer)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _SlowServer.release.set()
        httpd.shutdown()
        httpd.server_close()


def test_ctrl_c_does_not_wait_for_requests_in_flight(slow_server: str, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("first\nhang\nthird\nfourth\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    command = [SCIBERT_PACK, "predict", "--url", slow_server, "--model", "m", "--input",
               str(source), "--output", str(out), "--timeout", "120", "--concurrency", "2",
               "--batch-texts", "1", "--retries", "0"]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as running:
        assert _SlowServer.hanging.wait(timeout=60), "the hanging request never came"
        deadline = time.monotonic() + 30
        while not out.read_text(encoding="utf-8") and time.monotonic() < deadline:
            time.sleep(0.05)  # row 0 is written; rows 1 (hanging) and later are not
        interrupted = time.monotonic()
        running.send_signal(signal.SIGINT)
        _, stderr = running.communicate(timeout=30)
        took = time.monotonic() - interrupted
    assert running.returncode == 130, stderr
    assert took < 5, f"Ctrl-C took {took:.1f} s: it waited for the request in flight"
    assert stderr.splitlines()[-1] == (
        f"Warning: interrupted: the rows finished so far are in {out}; rerun the same command "
        "to resume"
    )
    assert [r["text"] for r in _records(out)] == ["first"]

    _SlowServer.release.set()
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out}: 1 of 4 rows already done" in resumed.stderr
    assert [(r["row"], r["line"], r["text"]) for r in _records(out)] == [
        (0, 1, "first"),
        (1, 2, "hang"),
        (2, 3, "third"),
        (3, 4, "fourth"),
    ]


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


@pytest.fixture
def csv_unclosed_quote(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    path.write_text('text\nfine\n"an unclosed quote swallows the rest\n' + "x" * 140_000 + "\n")
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
            "{path} line 2 is not JSON we can read (Expecting value): 'plain text'; "
            "give one JSON object per line, or pass --format lines",
        ),
        (
            "csv_unclosed_quote",
            "{path}: the record that starts on line 3 is not valid CSV (field larger than field "
            "limit (131072)); "
            "check its quoting, or pass --format lines or jsonl",
        ),
    ],
    ids=["unknown-column", "empty", "not-utf8", "missing-field", "not-json", "csv-unclosed-quote"],
)
def test_bad_input(request: pytest.FixtureRequest, fixture: str, message: str) -> None:
    path: Path = request.getfixturevalue(fixture)
    with pytest.raises(InputError) as caught:
        read_input(path, input_format(path), "text")
    assert str(caught.value) == message.format(path=path)


@pytest.mark.parametrize(
    ("name", "content", "rows", "skipped"),
    [
        pytest.param(
            "in.txt",
            "alpha\n\n  \nbeta\r\ngamma \u2028 delta\n",
            [InputRow("alpha", 1), InputRow("beta", 4), InputRow("gamma \u2028 delta", 5)],
            (),
            id="lines-blank-crlf-u2028",
        ),
        pytest.param(
            "in.jsonl",
            '{"text": "alpha", "id": 7}\n\n{"text": "  ", "id": 8}\n{"text": "b\u2028c"}\n',
            [InputRow("alpha", 1, 7), InputRow("b\u2028c", 4)],
            (3,),
            id="jsonl-ids-empty-text",
        ),
        pytest.param(
            "in.csv",
            CSV_WITH_HOLES.replace("abstract", "text"),
            [
                InputRow(TEXTS[0], 2, "a1"),
                InputRow(TEXTS[1], 4, "a3"),
                InputRow("cells divide\nunder the microscope", 7, "a5"),
                InputRow(TEXTS[2], 9, "a6"),
            ],
            (3, 6),
            id="csv-empty-cells-multiline",
        ),
    ],
)
def test_rows_keep_their_input_line_and_id(
    tmp_path: Path, name: str, content: str, rows: list[InputRow], skipped: tuple[int, ...]
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    found = read_input(path, input_format(path))
    assert list(found.rows) == rows
    assert found.skipped == skipped


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
        (
            ["--input", "x.txt", "--json"],
            "--json prints the raw response for TEXTS; --input always writes JSON lines "
            "(drop --json)",
        ),
        (
            ["--input", "x.txt", "--output", "./x.txt"],
            "--output x.txt is the --input file: results would be appended to the texts; "
            "pass another --output",
        ),
    ],
    ids=["both", "neither", "output-without-input", "json-with-input", "output-is-input"],
)
def test_cli_usage(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["predict", "--model", "m", *args])
    assert result.exit_code == 2
    assert f"Error: {message}" in result.stderr


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot tell the format of .*in\.dat .*'\.dat'"):
        input_format(tmp_path / "in.dat")
    assert input_format(tmp_path / "in.dat", "csv") == "csv"


# --- resuming: what an existing output may hold -----------------------------------------------

INPUT = (InputRow("alpha", 1, "a"), InputRow("beta", 2, "b"), InputRow("gamma", 4, "c"))


def _line(row: int, **fields: object) -> str:
    source = INPUT[row]
    record: dict[str, object] = {"row": row, "line": source.line, "id": source.id}
    record["text"] = source.text
    record.update(fields)
    return json.dumps({k: v for k, v in record.items() if v is not None}) + "\n"


DONE = {"label": "x", "probabilities": {"x": 1.0}, "truncated": False}
START_OVER = "; pass a new --output, or delete the file to start over"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            _line(0, **DONE) + _line(1, **DONE).replace('"beta"', '"BETA"'),
            "output file {out} line 2 holds row 1 with text 'BETA', but row 1 of the input "
            "(input line 2) has text 'beta': the output belongs to another input, or the input "
            "changed since" + START_OVER,
            id="text-differs",
        ),
        pytest.param(
            _line(2, **DONE).replace('"line": 4', '"line": 3'),
            "output file {out} line 1 holds row 2 with line 3, but row 2 of the input (input "
            "line 4) has line 4: the output belongs to another input, or the input changed "
            "since" + START_OVER,
            id="line-differs",
        ),
        pytest.param(
            _line(0, **DONE).replace('"id": "a"', '"id": "z"'),
            "output file {out} line 1 holds row 0 with id 'z', but row 0 of the input (input "
            "line 1) has id 'a': the output belongs to another input, or the input changed "
            "since" + START_OVER,
            id="id-differs",
        ),
        pytest.param(
            _line(0, **DONE) + '{"row": 7, "text": "delta", "label": "b"}\n',
            "output file {out} has a result for row 7 (line 2) but the input has only 3 texts: "
            "it belongs to another input" + START_OVER,
            id="row-beyond-the-input",
        ),
        pytest.param(
            _line(0, **DONE) + "something else\n" + _line(1, **DONE),
            "output file {out} line 2 is not a predict result: b'something else'" + START_OVER,
            id="not-a-result",
        ),
    ],
)
def test_output_of_another_input_is_refused(tmp_path: Path, content: str, message: str) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        ResumableOutput(out, INPUT)
    assert str(caught.value) == message.format(out=out)
    assert out.read_text(encoding="utf-8") == content  # left as it was


@pytest.mark.parametrize(
    ("content", "finished", "retried", "kept"),
    [
        pytest.param(
            _line(0, **DONE) + _line(1, error="refused", status=400) + _line(2, **DONE),
            {0, 1, 2}, set(), [0, 1, 2], id="results-and-a-4xx",
        ),
        pytest.param(
            _line(0, **DONE) + _line(1, error="boom", status=500) + _line(2, **DONE),
            {0, 2}, {1}, [0, 2], id="5xx-asked-again",
        ),
        pytest.param(
            _line(0, error="no answer", status=None) + _line(1, error="old", status=None),
            set(), {0, 1}, [], id="no-status-asked-again",
        ),
        pytest.param(
            _line(1, **DONE) + _line(0, **DONE) + _line(1, **DONE),
            {0, 1}, set(), [0, 1], id="repeated-row-kept-once-in-order",
        ),
        pytest.param(
            _line(0, **DONE) + _line(1, **DONE)[:20],
            {0}, set(), [0], id="partial-last-line-cut",
        ),
        pytest.param(
            _line(0, **DONE) + '{"row": 1, "text": "beta", "label": "x"}\n',
            {0, 1}, set(), [0, 1], id="record-without-line-or-id",
        ),
    ],
)  # fmt: skip
def test_resume_keeps_finished_rows_only(
    tmp_path: Path, content: str, finished: set[int], retried: set[int], kept: list[int]
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(content, encoding="utf-8")
    resumed = ResumableOutput(out, INPUT)
    resumed.close()
    assert (resumed.finished, resumed.retried) == (frozenset(finished), frozenset(retried))
    assert [r["row"] for r in _records(out)] == kept


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "error": "...",
                "code": 413,
                "limit_name": "max_explain_texts",
                "limit": 3,
                "value": 7,
            },
            ServerLimit("max_explain_texts", 3, 7),
        ),
        ({"error": "request holds 9 texts, more than the limit of 8", "code": 413}, None),
        ({"error": "x", "limit_name": "max_text_chars", "limit": "8", "value": 9}, None),
        ({"error": "x", "limit_name": "max_text_chars", "limit": True, "value": 9}, None),
        ({"error": "x", "limit_name": 5, "limit": 8, "value": 9}, None),
        (["limit_name", "limit", "value"], None),
        ("not json", None),
    ],
    ids=["fields", "message-only", "limit-text", "limit-bool", "name-number", "list", "text"],
)
def test_client_reads_the_limit_from_the_error_body(body: object, expected: object) -> None:
    """The limit comes from the body's fields, never from the wording of the message."""
    response = requests.Response()
    response.status_code = 413
    response._content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert _server_limit(response) == expected


@pytest.mark.parametrize(
    ("limit", "texts", "fits"),
    [
        (ServerLimit("max_explain_texts", 3, 7), 7, 3),
        (ServerLimit("max_explain_work", 1000, 1200), 3, 2),  # 3 texts x 400 steps
        (ServerLimit("max_explain_work", 100, 400), 1, 0),  # one text alone is over
        (ServerLimit("max_texts_per_request", 8, 9), 9, None),
        (None, 4, None),
    ],
    ids=["explain-texts", "explain-work", "one-text-over", "other-limit", "no-limit"],
)
def test_texts_that_fit_the_servers_limit(
    limit: ServerLimit | None, texts: int, fits: int | None
) -> None:
    assert _texts_that_fit(limit, texts) == fits
