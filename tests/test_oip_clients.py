"""Open Inference Protocol clients nobody here wrote, against a real TorchServe on a built archive.

tritonclient (HTTP, JSON and the binary tensor extension, both ways), requested outputs, and
TorchServe's own OIP gRPC service through stubs generated at test time from the proto inside the
torchserve jar. Every answer is compared with the plain REST JSON answer; bad requests are sent
beside good ones and the workers' pids (management API) must not change.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import struct
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests
from support.shared_servers import worker_pids
from support.tiny_models import LABELS

from scibert_pack.serving.server import TorchServeProcess

grpc = pytest.importorskip("grpc")
httpclient = pytest.importorskip("tritonclient.http")
protoc = pytest.importorskip("grpc_tools.protoc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL = "tiny"
TEXTS = [
    "the catalyst speeds up the reaction between the acid and the base .",
    "cells divide and the tissue grows",
    "photons scatter off the electrons in the médecine lab",
]
OIP_SERVICE = "org.pytorch.serve.grpc.openinference.GRPCInferenceService"


@pytest.fixture(scope="module")
def server(tiny_server: TorchServeProcess) -> TorchServeProcess:
    return tiny_server  # model "tiny", shared with other modules: send requests only


@pytest.fixture(scope="module")
def workers(server: TorchServeProcess) -> list[int]:
    return worker_pids(server)


def rest(server: TorchServeProcess, texts: list[str], action: str = "infer") -> dict[str, Any]:
    """The plain REST JSON v2 answer: the reference every client's answer must equal."""
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    url = f"{server.inference_url}/v2/models/{MODEL}/{action}"
    response = requests.post(url, json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@dataclass(frozen=True)
class Answer:
    labels: list[str]
    probabilities: list[list[float]]


def rest_answer(server: TorchServeProcess, texts: list[str]) -> Answer:
    outputs = {o["name"]: o for o in rest(server, texts)["outputs"]}
    flat = outputs["probabilities"]["data"]
    width = len(LABELS)
    rows = [flat[i : i + width] for i in range(0, len(flat), width)]
    return Answer(list(outputs["label"]["data"]), rows)


def assert_same(answer: Answer, expected: Answer) -> None:
    assert answer.labels == expected.labels
    assert np.allclose(answer.probabilities, expected.probabilities, atol=1e-5)


# -- tritonclient HTTP ----------------------------------------------------------------------


def triton(server: TorchServeProcess) -> Any:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.settings.port}")


def triton_input(texts: list[str], binary: bool) -> Any:
    tensor = httpclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=binary)
    return tensor


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
def test_tritonclient_http_answers_equal_rest(
    server: TorchServeProcess, binary_in: bool, binary_out: bool
) -> None:
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary_out)
        for name in ("label", "probabilities")
    ]
    result = triton(server).infer(MODEL, [triton_input(TEXTS, binary_in)], outputs=outputs)
    response = result.get_response()
    for output in response["outputs"]:
        assert ("binary_data_size" in output.get("parameters", {})) is binary_out, output
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(TEXTS), len(LABELS))
    answer = Answer([_text(v) for v in result.as_numpy("label")], probabilities.tolist())
    assert_same(answer, rest_answer(server, TEXTS))


def test_tritonclient_without_requested_outputs_gets_them_all(server: TorchServeProcess) -> None:
    result = triton(server).infer(MODEL, [triton_input(TEXTS, True)])
    answer = Answer(
        [_text(v) for v in result.as_numpy("label")], result.as_numpy("probabilities").tolist()
    )
    assert_same(answer, rest_answer(server, TEXTS))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_requested_outputs_subset(server: TorchServeProcess, binary: bool) -> None:
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = triton(server).infer(MODEL, [triton_input(TEXTS, binary)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("label") is None
    expected = rest_answer(server, TEXTS).probabilities
    assert np.allclose(result.as_numpy("probabilities"), expected, atol=1e-5)


def test_unknown_requested_output_is_a_400_naming_the_known_ones(
    server: TorchServeProcess,
) -> None:
    outputs = [httpclient.InferRequestedOutput("logits")]
    with pytest.raises(InferenceServerException) as info:
        triton(server).infer(MODEL, [triton_input(TEXTS, True)], outputs=outputs)
    assert info.value.status() == "400"
    assert "unknown output 'logits'; this route answers the outputs label, probabilities" in str(
        info.value.message()
    )


# -- the kserve SDK (InferenceRESTClient) --------------------------------------------------


def kserve_sdk() -> Any:
    """The kserve package (its import pulls fastapi, pandas, ...: installed by setup-env.sh)."""
    sdk = pytest.importorskip("kserve")
    if not hasattr(sdk, "InferenceRESTClient"):
        pytest.skip("`kserve` resolves to this repository's kserve/ folder, not the SDK")
    return sdk


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_sdk_v2_infer_equals_rest(server: TorchServeProcess, binary: bool) -> None:
    sdk = kserve_sdk()
    tensor = sdk.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=binary)
    from kserve.protocol.infer_type import RequestedOutput

    outputs = [
        RequestedOutput(name, parameters={"binary_data": binary})
        for name in ("label", "probabilities")
    ]
    request = sdk.InferRequest(MODEL, [tensor], request_outputs=outputs)

    headers: dict[str, str] = {}

    async def call() -> Any:
        async with sdk.InferenceRESTClient(sdk.RESTConfig(protocol="v2")) as client:
            return await client.infer(
                server.inference_url, request, model_name=MODEL, response_headers=headers
            )

    response = asyncio.run(call())
    assert ("inference-header-content-length" in headers) is binary
    outputs_by_name = {o.name: o for o in response.outputs}
    labels = [_text(v) for v in outputs_by_name["label"].as_numpy()]
    probabilities = outputs_by_name["probabilities"].as_numpy().reshape(len(TEXTS), -1)
    assert_same(Answer(labels, probabilities.tolist()), rest_answer(server, TEXTS))


def test_kserve_sdk_v1_explain_equals_rest(server: TorchServeProcess) -> None:
    """The SDK explains over v1 only (v2 explain raises UnsupportedProtocol in the client)."""
    sdk = kserve_sdk()

    async def call() -> Any:
        async with sdk.InferenceRESTClient(sdk.RESTConfig(protocol="v1")) as client:
            return await client.explain(server.inference_url, MODEL, {"instances": TEXTS[:2]})

    explained = asyncio.run(call())["explanations"]
    expected = rest(server, TEXTS[:2], "explain")["outputs"][0]["data"]
    assert [e["words"] for e in explained] == [e["words"] for e in expected]
    for item, reference in zip(explained, expected, strict=True):
        assert np.allclose(item["importances"], reference["importances"], atol=1e-5)


# -- binary extension by hand: explain, and malformed bodies ------------------------------


def binary_request(texts: list[str], **parameters: object) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request written from the protocol's description (not our codec)."""
    blob = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    tensor = {
        "name": "text",
        "shape": [len(texts)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"inputs": [tensor], "parameters": parameters}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


def test_binary_explain_equals_json_explain(server: TorchServeProcess) -> None:
    body, headers = binary_request(TEXTS[:2], binary_data_output=True)
    url = f"{server.inference_url}/v2/models/{MODEL}/explain"
    response = requests.post(url, data=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"] == "application/octet-stream"
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    (output,) = header["outputs"]
    assert output["name"] == "explain" and "data" not in output
    blob = response.content[length:]
    assert len(blob) == output["parameters"]["binary_data_size"]
    items, pos = [], 0
    while pos < len(blob):
        (size,) = struct.unpack_from("<I", blob, pos)
        items.append(json.loads(blob[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    expected = rest(server, TEXTS[:2], "explain")["outputs"][0]["data"]
    assert [i["words"] for i in items] == [e["words"] for e in expected]
    for item, reference in zip(items, expected, strict=True):
        assert np.allclose(item["importances"], reference["importances"], atol=1e-5)


def _lengthy(body: bytes, headers: dict[str, str], length: str) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "Inference-Header-Content-Length": length}


GOOD_BODY, GOOD_HEADERS = binary_request(TEXTS[:1])
HEADER_LEN = int(GOOD_HEADERS["Inference-Header-Content-Length"])
MALFORMED: dict[str, tuple[tuple[bytes, dict[str, str]], str]] = {
    "header-beyond-body": (
        _lengthy(GOOD_BODY, GOOD_HEADERS, str(len(GOOD_BODY) + 5)),
        "bytes but the body has only",
    ),
    "header-negative": (_lengthy(GOOD_BODY, GOOD_HEADERS, "-3"), "not a byte count"),
    "header-absurd": (_lengthy(GOOD_BODY, GOOD_HEADERS, "9" * 40), "not a byte count"),
    "element-beyond-input": (
        (
            GOOD_BODY[:HEADER_LEN] + struct.pack("<I", 10**6) + GOOD_BODY[HEADER_LEN + 4 :],
            GOOD_HEADERS,
        ),
        "says 1000000 bytes",
    ),
    "element-not-utf8": (
        (GOOD_BODY[:-2] + b"\xff\xfe", GOOD_HEADERS),
        "element 0 is not valid UTF-8",
    ),
    "size-beyond-body": ((GOOD_BODY[:-10], GOOD_HEADERS), "announces"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_binary_body_fails_alone(
    server: TorchServeProcess, workers: list[int], case: str
) -> None:
    (body, headers), needle = MALFORMED[case]
    expected = rest_answer(server, TEXTS[:1])
    url = f"{server.inference_url}/v2/models/{MODEL}/infer"
    jobs = ["bad"] + ["good"] * 6
    barrier = threading.Barrier(len(jobs))

    def go(job: str) -> requests.Response:
        data, hdrs = (body, headers) if job == "bad" else binary_request(TEXTS[:1])
        barrier.wait(timeout=30)
        return requests.post(url, data=data, headers=hdrs, timeout=60)

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(go, jobs))
    bad, goods = answers[0], answers[1:]
    assert bad.status_code == 400, bad.text[:300]
    assert needle in bad.json()["error"]
    for good in goods:
        assert good.status_code == 200, good.text[:300]
        labels = good.json()["outputs"][0]["data"]
        assert labels == expected.labels
    assert worker_pids(server) == workers, "a worker restarted"


# -- TorchServe's OIP gRPC service ----------------------------------------------------------


@dataclass(frozen=True)
class Stubs:
    pb2: ModuleType
    grpc: ModuleType


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stubs]:
    """Python stubs built from open_inference_grpc.proto inside the installed torchserve jar."""
    import ts

    out = tmp_path_factory.mktemp("oip_stubs")
    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    with zipfile.ZipFile(jar) as archive:
        name = next(n for n in archive.namelist() if n.endswith("open_inference_grpc.proto"))
        (out / "open_inference_grpc.proto").write_bytes(archive.read(name))
    args = ["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main([*args, str(out / "open_inference_grpc.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        yield Stubs(
            importlib.import_module("open_inference_grpc_pb2"),
            importlib.import_module("open_inference_grpc_pb2_grpc"),
        )
    finally:
        sys.path.remove(str(out))


def grpc_request(stubs: Stubs, texts: list[str] | list[bytes], **fields: Any) -> Any:
    pb2 = stubs.pb2
    raw = [t.encode() if isinstance(t, str) else t for t in texts]
    tensor = pb2.ModelInferRequest.InferInputTensor(
        name="text",
        datatype="BYTES",
        shape=[len(raw)],
        contents=pb2.InferTensorContents(bytes_contents=raw),
    )
    return pb2.ModelInferRequest(model_name=MODEL, id="g-1", inputs=[tensor], **fields)


def grpc_infer(server: TorchServeProcess, stubs: Stubs, request: Any) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{server.settings.grpc_port}") as channel:
        return stubs.grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)


def grpc_answer(response: Any) -> Answer:
    outputs = {o.name: o for o in response.outputs}
    # TorchServe writes each BYTES output element as its JSON text ("biology" with the quotes).
    labels = [json.loads(b) for b in outputs["label"].contents.bytes_contents]
    flat = list(outputs["probabilities"].contents.fp32_contents)
    width = len(LABELS)
    return Answer(labels, [flat[i : i + width] for i in range(0, len(flat), width)])


def test_torchserve_grpc_answers_equal_rest(server: TorchServeProcess, stubs: Stubs) -> None:
    response = grpc_infer(server, stubs, grpc_request(stubs, TEXTS))
    assert response.id == "g-1" and response.model_name == MODEL
    assert_same(grpc_answer(response), rest_answer(server, TEXTS))


BAD_GRPC: dict[str, tuple[Callable[[Stubs], Any], str]] = {
    "whitespace-text": (lambda s: grpc_request(s, ["   "]), "text 0 is empty or whitespace"),
    "not-utf8": (lambda s: grpc_request(s, [b"\xff\xfe"]), "bytes_contents[0] is not valid UTF-8"),
    "raw-input-contents": (
        lambda s: s.pb2.ModelInferRequest(
            model_name=MODEL,
            id="raw",
            inputs=[
                s.pb2.ModelInferRequest.InferInputTensor(name="t", datatype="BYTES", shape=[1])
            ],
            raw_input_contents=[struct.pack("<I", 5) + b"cells"],
        ),
        "drops raw_input_contents",
    ),
    "wrong-datatype": (
        lambda s: s.pb2.ModelInferRequest(
            model_name=MODEL,
            id="fp",
            inputs=[
                s.pb2.ModelInferRequest.InferInputTensor(
                    name="t",
                    datatype="FP32",
                    shape=[1],
                    contents=s.pb2.InferTensorContents(fp32_contents=[1.0]),
                )
            ],
        ),
        "this model takes text",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_GRPC))
def test_bad_grpc_request_alone_gets_invalid_argument(
    server: TorchServeProcess, workers: list[int], stubs: Stubs, case: str
) -> None:
    build, needle = BAD_GRPC[case]
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(server, stubs, build(stubs))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()
    assert worker_pids(server) == workers, "a worker restarted"


def test_bad_grpc_request_beside_good_ones_leaves_them_and_the_workers_alone(
    server: TorchServeProcess, workers: list[int], stubs: Stubs
) -> None:
    expected = rest_answer(server, TEXTS[:1])
    jobs = ["bad", "bad", "grpc", "grpc", "rest", "rest", "rest", "rest"]
    barrier = threading.Barrier(len(jobs))

    def go(job: str) -> Any:
        barrier.wait(timeout=30)
        if job == "rest":
            return rest_answer(server, TEXTS[:1])
        request = grpc_request(stubs, ["  "] if job == "bad" else TEXTS[:1])
        try:
            return grpc_infer(server, stubs, request)
        except grpc.RpcError as exc:
            return exc

    for _ in range(3):
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(go, jobs))
        for job, answer in zip(jobs, answers, strict=True):
            if job == "rest":
                assert_same(answer, expected)
            elif job == "grpc":
                assert_same(grpc_answer(answer), expected)
            elif isinstance(answer, grpc.RpcError):
                # Alone in its batch: a real gRPC error status.
                assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "empty or whitespace" in answer.details()
            else:
                # Batched with others: TorchServe 0.12 cannot fail it alone (see README).
                outputs = {o.name: o for o in answer.outputs}
                assert set(outputs) == {"error", "error_code"}
                assert list(outputs["error_code"].contents.int_contents) == [400]
                message = json.loads(outputs["error"].contents.bytes_contents[0])
                assert "empty or whitespace" in message
    assert worker_pids(server) == workers, "a worker restarted"


STOCK_CLIENT = """
import sys
import numpy as np
import tritonclient.grpc as client
from tritonclient.utils import InferenceServerException

triton = client.InferenceServerClient(url=sys.argv[1])
tensor = client.InferInput("text", [1], "BYTES")
tensor.set_data_from_numpy(np.array(["cells divide"], dtype=np.object_))
try:
    triton.infer(sys.argv[2], [tensor])
except InferenceServerException as exc:
    print(exc.status())
"""


def test_stock_oip_grpc_clients_get_unimplemented(server: TorchServeProcess) -> None:
    """tritonclient calls inference.GRPCInferenceService; TorchServe registers OIP_SERVICE.

    In a child process: tritonclient.grpc and the kserve SDK both register the `inference.*`
    protobuf messages, and one Python process cannot hold both.
    """
    address = f"127.0.0.1:{server.settings.grpc_port}"
    child = subprocess.run(
        [sys.executable, "-c", STOCK_CLIENT, address, MODEL],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert child.stdout.strip() == "StatusCode.UNIMPLEMENTED", child.stderr[-2000:]


# -- routes TorchServe has and has not (what the README's protocol section states) ----------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/ping", 200),
        ("GET", "/v2/health/ready", 200),
        ("GET", "/v2/health/live", 200),
        ("GET", f"/v2/models/{MODEL}", 404),
        ("GET", f"/v2/models/{MODEL}/ready", 404),
        ("GET", f"/v1/models/{MODEL}", 404),
        ("GET", "/", 405),
    ],
)
def test_routes_of_the_torchserve_frontend(
    server: TorchServeProcess, method: str, path: str, status: int
) -> None:
    response = requests.request(method, server.inference_url + path, timeout=30)
    assert response.status_code == status


def test_curl_d_without_content_type_is_told_to_send_it(server: TorchServeProcess) -> None:
    body = json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "data": ["cells"]}]})
    url = f"{server.inference_url}/v2/models/{MODEL}/infer"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response = requests.post(url, data=body, headers=form, timeout=30)
    assert response.status_code == 400
    assert "with the header Content-Type: application/json" in response.json()["error"]
