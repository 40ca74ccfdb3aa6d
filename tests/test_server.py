"""Against a real TorchServe (Java front end + Python worker) serving a built tiny archive:
every route, real cross-request batching, per-request errors, explanation invariants."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from support.shared_servers import worker_pids
from support.tiny_models import LABELS

from scibert_pack.serving.server import TorchServeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

BLOG_TEXT = "Risk assessment implications of site-specific oral relative bioavailability."
TEXTS = [
    BLOG_TEXT,
    "the electron beam scatters from the crystal lattice at low temperature .",
    "the catalyst speeds up the reaction between the acid and the base .",
    "cells divide and the tissue grows under the microscope .",
]


@pytest.fixture(scope="module")
def server(tiny_server: TorchServeProcess) -> TorchServeProcess:
    return tiny_server  # model "tiny", shared with other modules: send requests only


def _post(server: TorchServeProcess, path: str, body: Any, **kwargs: Any) -> requests.Response:
    if isinstance(body, (bytes, str)):
        return requests.post(server.inference_url + path, data=body, timeout=120, **kwargs)
    return requests.post(server.inference_url + path, json=body, timeout=120, **kwargs)


def _v2(texts: list[str] | str, request_id: str = "r1", **parameters: Any) -> dict[str, Any]:
    shape = [len(texts)] if isinstance(texts, list) else -1
    body: dict[str, Any] = {
        "id": request_id,
        "inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": texts}],
    }
    if parameters:
        body["parameters"] = parameters
    return body


def _probabilities(body: dict[str, Any]) -> list[list[float]]:
    out = {o["name"]: o for o in body["outputs"]}["probabilities"]
    n, width = out["shape"]
    return [out["data"][i * width : (i + 1) * width] for i in range(n)]


def test_v2_infer(server: TorchServeProcess) -> None:
    response = _post(server, "/v2/models/tiny/infer", _v2(TEXTS, "abc"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("abc", "tiny", "1.0")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [4]
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [4, len(LABELS)]
    for label, row in zip(outputs["label"]["data"], _probabilities(body), strict=True):
        assert math.isclose(sum(row), 1.0, abs_tol=1e-5)
        assert label == list(LABELS.values())[row.index(max(row))]


def test_blog_explain_payload(server: TorchServeProcess) -> None:
    """The blog's exact request: shape -1 and data a JSON string with a "text" key."""
    payload = {
        "id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298",
        "inputs": [
            {
                "name": "4b7c7d4a-51e4-43c8-af61-04639f6ef4bc",
                "shape": -1,
                "datatype": "BYTES",
                "data": '{"text":"Risk assessment implications."}',
            }
        ],
    }
    response = _post(server, "/v2/models/tiny/explain", payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == payload["id"]
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("explain", "BYTES", [1])
    (item,) = output["data"]
    # The text's own words, as written (the tokenizer lowercases: "risk", "[CLS]", ...).
    assert item["words"] == ["Risk", "assessment", "implications", "."]
    assert len(item["importances"]) == len(item["words"])
    assert item["label"] in LABELS.values()


@pytest.mark.parametrize(
    ("path", "body", "check"),
    [
        ("/v1/models/tiny:predict", {"instances": [BLOG_TEXT, {"text": TEXTS[1]}]}, "v1-predict"),
        ("/v1/models/tiny:explain", {"instances": [{"text": BLOG_TEXT}]}, "v1-explain"),
        ("/predictions/tiny", BLOG_TEXT.encode(), "native-one"),
        ("/predictions/tiny", {"text": BLOG_TEXT}, "native-one"),
        ("/explanations/tiny", BLOG_TEXT.encode(), "native-explain"),
    ],
    ids=["v1-predict", "v1-explain", "native-plain", "native-json", "native-explain"],
)
def test_v1_and_native_routes(server: TorchServeProcess, path: str, body: Any, check: str) -> None:
    response = _post(server, path, body)
    assert response.status_code == 200, response.text
    result = response.json()
    if check == "v1-predict":
        assert len(result["predictions"]) == 2
        for item in result["predictions"]:
            assert set(item["probabilities"]) == set(LABELS.values())
            assert item["label"] == max(item["probabilities"], key=item["probabilities"].get)
    elif check == "v1-explain":
        (item,) = result["explanations"]
        assert len(item["words"]) == len(item["importances"])
    elif check == "native-one":
        assert result["label"] in LABELS.values()
    else:
        assert len(result["words"]) == len(result["importances"]) and "delta" in result


def test_concurrent_requests_batch_and_keep_their_own_ids(server: TorchServeProcess) -> None:
    """Sixteen requests at once: answered in shared batches, each with its own id and result."""
    alone = {
        t: _probabilities(_post(server, "/v2/models/tiny/infer", _v2([t])).json())[0] for t in TEXTS
    }
    before = _batch_counters(server)
    barrier = threading.Barrier(16)

    def send(i: int) -> tuple[int, requests.Response]:
        barrier.wait(timeout=30)
        return i, _post(server, "/v2/models/tiny/infer", _v2([TEXTS[i % 4]], f"req-{i}"))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(16)))
    for i, response in results:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == f"req-{i}"
        got = _probabilities(body)[0]
        assert got == pytest.approx(alone[TEXTS[i % 4]], abs=1e-5)
    # The front end reads a worker's metrics from its log lines, after the answers went out:
    # the counters catch up shortly after the last response.
    for _ in range(100):
        after = _batch_counters(server)
        requests_seen = after["requests"] - before["requests"]
        if requests_seen >= 16:
            break
        time.sleep(0.1)
    batches = after["batches"] - before["batches"]
    assert requests_seen == 16
    assert batches < 16, f"16 concurrent requests took {batches} batches: no batching happened"


def _batch_counters(server: TorchServeProcess) -> dict[str, float]:
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    found = {"requests": 0.0, "batches": 0.0}
    for line in text.splitlines():
        for key, metric in (
            ("requests", "scibert_requests_total"),
            ("batches", "scibert_batches_total"),
        ):
            if line.startswith(metric + "{"):
                found[key] += float(line.rsplit(" ", 1)[1])
    return found


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("invalid-json", "/v2/models/tiny/infer", b'{"inputs": [', 400, "JSON"),
    ("no-inputs", "/v2/models/tiny/infer", {"id": "x"}, 400, "inputs"),
    ("empty-inputs", "/v2/models/tiny/infer", {"inputs": []}, 400, "inputs"),
    (
        "wrong-datatype",
        "/v2/models/tiny/infer",
        {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
        400,
        "BYTES",
    ),
    (
        "shape-mismatch",
        "/v2/models/tiny/infer",
        {"inputs": [{"name": "t", "shape": [3], "datatype": "BYTES", "data": ["a"]}]},
        400,
        "disagrees",
    ),
    ("empty-text", "/v2/models/tiny/infer", _v2(["   "]), 400, "empty"),
    ("number-not-text", "/v2/models/tiny/infer", _v2([42]), 400, "string"),  # type: ignore[list-item]
    (
        "unknown-target",
        "/v2/models/tiny/explain",
        _v2([BLOG_TEXT], target="geology"),
        400,
        "geology",
    ),
    ("steps-over-cap", "/v2/models/tiny/explain", _v2([BLOG_TEXT], n_steps=100000), 400, "n_steps"),
    ("v1-no-instances", "/v1/models/tiny:predict", {"instances": []}, 400, "no text"),
]


@pytest.mark.parametrize(
    ("path", "body", "code", "needle"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_request_fails_alone(
    server: TorchServeProcess, path: str, body: Any, code: int, needle: str
) -> None:
    pids = worker_pids(server)
    barrier = threading.Barrier(3)

    def send(which: str) -> requests.Response:
        barrier.wait(timeout=30)
        if which == "bad":
            headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else {}
            return _post(server, path, body, headers=headers)
        return _post(server, "/v2/models/tiny/infer", _v2([BLOG_TEXT], which))

    with ThreadPoolExecutor(3) as pool:
        bad, good1, good2 = pool.map(send, ["bad", "good-1", "good-2"])
    assert bad.status_code == code, bad.text
    error = bad.json()
    assert needle.lower() in error["error"].lower()
    assert error["code"] == code
    for good, rid in ((good1, "good-1"), (good2, "good-2")):
        assert good.status_code == 200, good.text
        assert good.json()["id"] == rid
    assert worker_pids(server) == pids, "the worker restarted"


def test_explanations_hold_their_invariants(server: TorchServeProcess) -> None:
    infer = _post(server, "/v2/models/tiny/infer", _v2(TEXTS)).json()
    labels = {o["name"]: o for o in infer["outputs"]}["label"]["data"]
    response = _post(server, "/v2/models/tiny/explain", _v2(TEXTS, "e1"))
    assert response.status_code == 200, response.text
    items = response.json()["outputs"][0]["data"]
    assert len(items) == len(TEXTS)
    for item, label, text in zip(items, labels, TEXTS, strict=True):
        assert len(item["words"]) == len(item["importances"])
        assert "".join(item["words"]) == "".join(text.split())  # the text's words, in order
        assert item["label"] == label and item["target"] == label
        assert abs(item["delta"]) < 0.05
    asked = _post(server, "/v2/models/tiny/explain", _v2([BLOG_TEXT], target="physics"))
    assert asked.json()["outputs"][0]["data"][0]["target"] == "physics"


def test_over_long_text_is_truncated_and_said_so(server: TorchServeProcess) -> None:
    long_text = " ".join(["cells divide"] * 200)
    body = _post(server, "/v2/models/tiny/infer", _v2([long_text, BLOG_TEXT])).json()
    assert body["parameters"]["truncated"] == [True, False]


def test_custom_metrics_reach_prometheus(server: TorchServeProcess) -> None:
    _post(server, "/v2/models/tiny/explain", _v2([BLOG_TEXT]))
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    for metric in ("scibert_texts_per_batch", "scibert_inference_ms", "scibert_explain_ms",
                   "scibert_explain_steps", "ts_inference_requests_total"):  # fmt: skip
        assert f"\n{metric}{{" in text, metric


def test_model_registration_is_off(server: TorchServeProcess) -> None:
    response = requests.post(f"{server.management_url}/models?url=tiny.mar", timeout=10)
    assert response.status_code in (403, 405), response.text


def test_serve_cli_predict_and_explain_tables(server: TorchServeProcess) -> None:
    from click.testing import CliRunner

    from scibert_pack.cli import cli

    args = ["--url", server.inference_url, "--model", "tiny"]
    long_text = " ".join([BLOG_TEXT] * 3)
    result = CliRunner().invoke(cli, ["predict", long_text, "cells\ndivide", *args])
    assert result.exit_code == 0, result.output
    raw = CliRunner().invoke(cli, ["predict", long_text, "cells\ndivide", *args, "--json"])
    assert json.loads(raw.stdout)["model_name"] == "tiny"
    lines = result.stdout.splitlines()
    # Each text whole on one line, its label, then every label's probability, most likely first.
    assert len(lines) == 6
    assert (lines[0], lines[3]) == (long_text, "cells divide")
    for label_line, all_line in ((lines[1], lines[2]), (lines[4], lines[5])):
        top = re.fullmatch(r"  label: (\S+)  p: (\d\.\d{3})", label_line)
        assert top is not None, label_line
        shown = re.findall(r"(\S+) (\d\.\d{3}|\d\.\de-\d\d)(?:, |$)", all_line.split(": ", 1)[1])
        assert all_line.startswith("  probabilities: ")
        assert {name for name, _ in shown} == set(LABELS.values())
        values = [float(v) for _, v in shown]
        assert values == sorted(values, reverse=True) and shown[0] == top.groups()
        assert math.isclose(sum(values), 1.0, abs_tol=0.01)
    result = CliRunner().invoke(cli, ["explain", long_text, *args, "--top", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == long_text
    match = re.fullmatch(r"  label: \S+  target: \S+  delta: (\S+)  steps: (\d+)", lines[1])
    assert match is not None and match.group(1) != "-0.0000", lines[1]
    assert re.fullmatch(r"0|[+-](\d\.\d{3}|\d\.\de-\d\d)", match.group(1)), lines[1]
    assert len(lines[2].split(", ")) == 3
    for option, steps in (
        (["--explain-tolerance", "0.05"], {8, 16, 32, 64}),
        (["--tolerance", "0.05"], {8, 16, 32, 64}),  # the short spelling
        (["--explain-steps", "12"], {12}),
    ):
        result = CliRunner().invoke(cli, ["explain", long_text, *args, *option])
        assert result.exit_code == 0, result.output
        match = re.fullmatch(r"  label: .*  steps: (\d+)", result.stdout.splitlines()[1])
        assert match is not None and int(match.group(1)) in steps, result.stdout
    # Progress goes to stderr, and -q silences it; the answers stay on stdout.
    two = [long_text, "cells divide", *args, "--batch-texts", "1"]
    for quiet, said in (([], "explained 2/2 texts\n"), (["-q"], "")):
        result = CliRunner().invoke(cli, ["explain", *two, *quiet])
        assert result.exit_code == 0, result.output
        assert result.stderr.endswith(said) and (said or result.stderr == "")
        assert result.stdout.splitlines()[0] == long_text
