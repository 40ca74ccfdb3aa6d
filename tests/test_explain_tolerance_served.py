"""The tolerance mode on a real TorchServe: tolerance, explicit and bad requests sent at once,
each answered on its own (bad ones with a fixed reason phrase and the details in the body),
no worker restarted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from support.shared_servers import worker_states

from scibert_pack.handlers.render import reason_phrase
from scibert_pack.handlers.settings import DEFAULT_TOLERANCE, LADDER_START
from scibert_pack.serving.server import TorchServeProcess

MODEL = "tiny"
TEXTS = [
    "the catalyst speeds up the reaction between the acid and the base .",
    "cells divide and the tissue grows",
    "photons scatter off the electrons",
]


@pytest.fixture(scope="module")
def server(tiny_server: TorchServeProcess) -> TorchServeProcess:
    return tiny_server  # model "tiny", shared with other modules: send requests only


def post(server: TorchServeProcess, texts: list[Any], parameters: object) -> requests.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]
    }
    if parameters is not None:
        body["parameters"] = parameters
    url = f"{server.inference_url}/v2/models/{MODEL}/explain"
    return requests.post(url, json=body, timeout=60)


GOOD: list[tuple[str, list[str], dict[str, Any] | None, float | None]] = [
    ("server-default", TEXTS, None, DEFAULT_TOLERANCE),
    ("tolerance-one-text", TEXTS[:1], {"tolerance": 1e-4}, 1e-4),
    ("tolerance-tight", TEXTS, {"tolerance": 1e-6, "granularity": "pieces"}, 1e-6),
    ("explicit-n-steps", TEXTS[1:], {"n_steps": 12}, None),
]
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("zero", {"tolerance": 0}, "tolerance must be between 1e-06 and 0.1, got 0"),
    ("string", {"tolerance": "1e-3"}, "tolerance must be a number, got '1e-3'"),
    ("huge", {"tolerance": 1e308}, "tolerance must be between 1e-06 and 0.1, got 1e+308"),
    ("both", {"tolerance": 0.01, "n_steps": 8}, "parameters give both n_steps and tolerance"),
]


def test_tolerance_requests_served_beside_bad_ones(server: TorchServeProcess) -> None:
    before = worker_states(server)
    jobs = [(name, texts, params) for name, texts, params, _ in GOOD]
    jobs += [(name, TEXTS[:1], params) for name, params, _ in BAD]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = dict(
            zip(
                [name for name, _, _ in jobs],
                pool.map(lambda job: post(server, job[1], job[2]), jobs),
                strict=True,
            )
        )
    for name, texts, _, tolerance in GOOD:
        reply = answers[name]
        assert reply.status_code == 200, (name, reply.text)
        items = reply.json()["outputs"][0]["data"]
        assert len(items) == len(texts), name
        for item in items:
            assert len(item["words"]) == len(item["importances"]), name
            if tolerance is None:
                assert item["n_steps"] == 12 and "converged" not in item, name
                continue
            assert item["tolerance"] == tolerance, name
            assert item["converged"] == (abs(item["delta"]) <= tolerance), name
            assert item["n_steps"] >= LADDER_START and item["n_steps"] % LADDER_START == 0, name
    for name, _, message in BAD:
        reply = answers[name]
        assert (reply.status_code, reply.reason) == (400, reason_phrase(400)), name
        body = reply.json()
        assert body["code"] == 400 and body["error"].startswith(message), (name, body)
    assert worker_states(server) == before
