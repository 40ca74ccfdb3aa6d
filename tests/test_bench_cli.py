"""`scibert-pack bench`: a closed-loop load test against a real TorchServe serving the tiny
model, and against a closed port."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.cli import cli
from scibert_pack.client.load_generator import LoadSettings, percentile
from scibert_pack.errors import InputError
from scibert_pack.serving.server import TorchServeProcess


@pytest.fixture(scope="module")
def server(tiny_server: TorchServeProcess) -> TorchServeProcess:
    return tiny_server  # shared with other modules: send requests only


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bench(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["bench", *args])
    return result.exit_code, result.stdout, result.stderr


def _check_latencies(latency: dict[str, float]) -> None:
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert latency["p50"] <= latency["mean"] * 3  # the mean is not out of the range either
    assert latency["mean"] <= latency["max"]


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "route", "texts", "count"),
    [
        ([], "infer", 1, 50),
        (["--explain"], "explain", 1, 12),  # 50 integrated-gradients steps each
        (["--payload", "{payload}"], "infer", 3, 50),
    ],
    ids=["infer", "explain", "payload-file"],
)
def test_bench_requests(
    server: TorchServeProcess,
    tmp_path: Path,
    extra: list[str],
    route: str,
    texts: int,
    count: int,
) -> None:
    payload = tmp_path / "body.json"
    payload.write_text(
        json.dumps({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                                "data": ["cells divide", "the acid", "a photon"]}]})
    )  # fmt: skip
    extra = [a.format(payload=payload) for a in extra]
    code, out, err = _bench(
        "--url", server.inference_url, "--model", "tiny", "--requests", str(count),
        "--concurrency", "4", "--warmup", "2", "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["url"] == f"{server.inference_url}/v2/models/tiny/{route}"
    assert (report["requests"], report["ok"]) == (count, count)
    assert report["statuses"] == {"200": count}
    assert report["errors"] == [] and report["stopped_early"] is None
    assert report["texts_per_request"] == texts
    assert report["requests_per_s"] == pytest.approx(count / report["elapsed_s"], rel=1e-3)
    assert report["texts_per_s"] == pytest.approx(texts * report["requests_per_s"], rel=1e-3)
    _check_latencies(report["latency_ms"])
    assert "warming up: 2 requests" in err


@pytest.mark.server
@pytest.mark.slow
def test_bench_duration_and_errors_in_text(server: TorchServeProcess, tmp_path: Path) -> None:
    payload = tmp_path / "bad.json"
    # Every other field is fine; an empty text is refused with 400 by the handler.
    payload.write_text(
        json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [" "]}]})
    )
    code, out, err = _bench(
        "--url", server.inference_url, "--model", "tiny", "--duration", "1.5",
        "--concurrency", "2", "--payload", str(payload),
    )  # fmt: skip
    assert code == 1
    lines = out.splitlines()
    sent = int(re.search(r"Requests: +(\d+) in", lines[2]).group(1))  # type: ignore[union-attr]
    assert sent > 2
    assert re.fullmatch(rf"Requests: +{sent} in 1\.[5-9]\d s, 0 answered 200", lines[2])
    assert lines[5] == f"Statuses:     400: {sent}"
    assert lines[6] == "Error:        400: text 0 is empty or whitespace; send some words"
    assert err.splitlines()[-1] == (
        f"Error: no request to {server.inference_url}/v2/models/tiny/infer succeeded "
        f"(400: {sent}); check --url and --model-name, and that the server is running"
    )


def test_bench_closed_port(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    code, out, err = _bench("--url", url, "--model", "m", "--duration", "30", "-c", "2")
    assert code == 1
    assert "Statuses:     connection error: " in out
    assert "Stopped:      stopped after 1" in out  # 10 or 11: two workers race to the limit
    assert f"Error:        cannot connect to {url}: connection refused" in out
    assert "Throughput:   0.00 req/s, 0.00 texts/s" in out
    assert f"Error: no request to {url}/v2/models/m/infer succeeded (connection error: " in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--requests", "5", "--duration", "1"], "give --duration or --requests, not both"),
        (["--requests", "0"], "--requests 0 is below 1; pass 1 or more"),
        (["--concurrency", "0"], "--concurrency 0 is out of range (expected 1 to 1024)"),
        (["--payload", "{missing}"], "cannot read payload file {missing} (No such file"),
        (["--payload", "{list_body}"], "payload file {list_body} holds a JSON list, not an"),
        (["--url", "ftp://127.0.0.1/"], "--url 'ftp://127.0.0.1/' is not an http(s) URL"),
    ],
    ids=[
        "both-bounds",
        "zero-requests",
        "zero-concurrency",
        "missing-payload",
        "list-payload",
        "not-http",
    ],
)
def test_bench_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    paths = {"missing": tmp_path / "nope.json", "list_body": tmp_path / "list.json"}
    paths["list_body"].write_text("[1, 2]")
    code, out, err = _bench(
        "--url", "http://127.0.0.1:9", "--model", "m", *[a.format(**paths) for a in args]
    )
    assert code == 2
    assert out == ""
    assert message.format(**paths) in err


def test_settings_need_exactly_one_bound() -> None:
    with pytest.raises(InputError, match="give either a request count or a duration"):
        LoadSettings(url="http://127.0.0.1:9", model="m")


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 90, 4.0),
        (list(map(float, range(1, 101))), 99, 99.0),
        (list(map(float, range(1, 101))), 100, 100.0),
        ([7.0], 99, 7.0),
        ([], 50, 0.0),
    ],
    ids=["p50-even", "p90-small", "p99-of-100", "p100", "single", "empty"],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected
