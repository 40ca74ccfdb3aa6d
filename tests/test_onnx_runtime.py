"""`build --runtime onnx`: predictions through ONNX Runtime answer as PyTorch does (every
probability within 1e-4, every label the same) for every BERT family the tests build, in process
and through a real TorchServe; explanations still come from the same fp32 weights; a worker
without onnxruntime fails to load with the fix; the build checks its export and refuses one that
answers otherwise; the Dockerfile of such a store pins onnxruntime. The int8 runtimes
(torch-int8, onnx-int8) stay within int8's distance of fp32, report their agreement and are
refused below --min-label-agreement; ONNX runs on the worker's GPU only when it has one."""

from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from click.testing import CliRunner
from support.build_and_serve import serving
from support.fake_context import FakeContext
from support.tiny_models import Family

from scibert_pack.archiver import onnx_export
from scibert_pack.archiver.build import build
from scibert_pack.archiver.onnx_export import (
    PROBABILITY_TOLERANCE,
    export_onnx,
    export_onnx_int8,
)
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.demo.corpus import load_corpus
from scibert_pack.errors import BuildError, InputError
from scibert_pack.handlers.model import Classifier
from scibert_pack.handlers.onnx_runtime import (
    CPU,
    CUDA,
    ONNX_FILE,
    ONNX_INT8_FILE,
    OnnxLoadError,
    choose_providers,
)
from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import HandlerSettings
from scibert_pack.serving.server import TorchServeProcess

FAMILIES: tuple[Family, ...] = ("bert", "roberta", "distilbert")
ONNX = HandlerSettings(runtime="onnx", max_length=64)
TORCH = HandlerSettings(max_length=64)
CORPUS_TEXTS = [e.text for e in (*load_corpus().train, *load_corpus().held_out)]


def _exported(source: Path, work: Path) -> Path:
    folder = work / "model"
    shutil.copytree(source, folder)
    export_onnx(folder, folder / ONNX_FILE, ONNX)
    return folder


def _service(folder: Path, settings: HandlerSettings) -> ClassifierService:
    return ClassifierService.from_context(
        FakeContext(folder, handler_settings=settings.to_mapping())
    )


def _probabilities(classifier: Classifier, texts: list[str]) -> torch.Tensor:
    return torch.cat(
        [
            classifier.probabilities(classifier.tokenize(texts[i : i + 16]).inputs)
            for i in range(0, len(texts), 16)
        ]
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_answers_as_torch_on_the_demo_corpus(
    family: Family, tiny_models: dict[Family, Path], tmp_path: Path
) -> None:
    folder = _exported(tiny_models[family], tmp_path)
    fast, reference = _service(folder, ONNX), _service(folder, TORCH)
    assert fast.classifier.fast_logits is not None and reference.classifier.fast_logits is None
    texts = [*CORPUS_TEXTS, " ".join(CORPUS_TEXTS)]  # and one text truncated at max_length
    got, expected = (
        _probabilities(fast.classifier, texts),
        _probabilities(reference.classifier, texts),
    )
    assert float((got - expected).abs().max()) <= PROBABILITY_TOLERANCE
    assert got.argmax(dim=-1).tolist() == expected.argmax(dim=-1).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_export_finishes_its_last_layer_for_the_first_token_as_torch_does(
    family: Family, tiny_models: dict[Family, Path], tmp_path: Path
) -> None:
    """The graph holds the cut (Slice nodes more than a --no-trim-last-layer export has), and
    export_onnx's own check against the whole torch model passed (it raises otherwise)."""
    import onnx

    slices = []
    for trim in (True, False):
        target = tmp_path / f"trim-{trim}.onnx"
        check = export_onnx(tiny_models[family], target, replace(ONNX, trim_last_layer=trim))
        assert check.label_agreement == 1.0
        slices.append(sum(n.op_type == "Slice" for n in onnx.load(str(target)).graph.node))
    assert slices[0] > slices[1]


def test_the_build_records_its_check_and_the_dockerfile_pins_onnxruntime(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from scibert_pack.kserve.deployment_values import resolve
    from scibert_pack.kserve.dockerfile import dockerfile
    from scibert_pack.kserve.options import ManifestOptions
    from scibert_pack.kserve.store_info import read_store_for_manifest

    out = tmp_path / "store"
    args = [
        "build",
        str(tiny_bert),
        "--name",
        "tiny",
        "--runtime",
        "onnx",
        "-o",
        str(out),
        "--json",
    ]
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)["build_report"]
    check = report["runtime_check"]
    assert check["runtime"] == "onnx" and check["label_agreement"] == 1.0
    assert check["max_probability_difference"] <= check["tolerance"] == PROBABILITY_TOLERANCE
    assert check["checked_texts"] == len(CORPUS_TEXTS) + 2
    assert report["settings"]["handler"]["runtime"] == "onnx"
    assert ONNX_FILE in zipfile.ZipFile(out / "model-store" / "tiny.mar").namelist()
    version = report["versions"]["onnxruntime"]
    resolved = resolve(
        ManifestOptions(name="tiny", storage_uri="s3://bucket/tiny"),
        read_store_for_manifest(tmp_path / "store"),
    )
    assert f"onnxruntime=={version}" in dockerfile(resolved)
    plain = build(tiny_bert, BuildSettings(name="tiny"), tmp_path / "plain")
    assert "runtime_check" not in plain.report
    assert "onnxruntime" not in dockerfile(
        resolve(
            ManifestOptions(name="tiny", storage_uri="s3://bucket/tiny"),
            read_store_for_manifest(tmp_path / "plain"),
        )
    )


def test_the_build_refuses_an_export_that_answers_otherwise(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tolerance no float computation meets: the export differs from torch by rounding.
    monkeypatch.setattr(onnx_export, "PROBABILITY_TOLERANCE", 0.0)
    with pytest.raises(
        BuildError, match=r"does not answer as PyTorch does: labels agree on"
    ) as err:
        build(tiny_bert, BuildSettings(name="tiny", handler=ONNX), tmp_path / "store")
    assert "--runtime torch" in str(err.value.fix)
    assert not (tmp_path / "store" / "model-store").exists()


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("no-onnxruntime", r"cannot import onnxruntime .*pip install onnxruntime"),
        ("no-model-onnx", r"has no model.onnx .*rebuild it with scibert-pack build --runtime onnx"),
    ],
    ids=["no-onnxruntime", "no-model-onnx"],
)
def test_a_worker_that_cannot_run_onnx_says_how_to_fix_it(
    broken: str, message: str, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _exported(tiny_bert, tmp_path)
    if broken == "no-onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    else:
        (folder / ONNX_FILE).unlink()
    with pytest.raises(OnnxLoadError, match=message):
        _service(folder, ONNX)


@pytest.fixture(scope="module")
def onnx_server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    settings = BuildSettings(name="tiny", profile="local", max_batch_delay_ms=5, handler=ONNX)
    with serving(tiny_bert, tmp_path_factory.mktemp("onnx-served"), settings) as running:
        yield running


def _post(server: TorchServeProcess, verb: str, texts: list[str]) -> dict[str, Any]:
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    response = requests.post(
        f"{server.inference_url}/v2/models/tiny/{verb}", json=body, timeout=120
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_served_onnx_predictions_and_explanations(
    onnx_server: TorchServeProcess, tiny_bert: Path
) -> None:
    texts = CORPUS_TEXTS[:24]
    outputs = {o["name"]: o for o in _post(onnx_server, "infer", texts)["outputs"]}
    width = len(outputs["probabilities"]["data"]) // len(texts)
    served = torch.tensor(outputs["probabilities"]["data"]).reshape(len(texts), width)
    reference = _service(tiny_bert, TORCH).classifier
    expected = _probabilities(reference, texts)
    assert float((served - expected).abs().max()) <= PROBABILITY_TOLERANCE
    labels = [reference.labels[i] for i in expected.argmax(dim=-1).tolist()]
    assert outputs["label"]["data"] == labels
    # Explanations run on the torch weights the export came from: the label they explain is
    # the one predicted, and integrated gradients stays complete (a small delta).
    items = _post(onnx_server, "explain", texts[:2])["outputs"][0]["data"]
    for item, label, text in zip(items, labels[:2], texts[:2], strict=True):
        assert item["label"] == label and item["target"] == label
        assert "".join(text.split()).startswith("".join(item["words"]))  # truncated at 64
        assert abs(item["delta"]) < 0.05


# --- torch-int8: approximate, measured at build time, explanations say they are fp32 -----------

INT8 = HandlerSettings(runtime="torch-int8", max_length=64)
ONNX_INT8 = HandlerSettings(runtime="onnx-int8", max_length=64)
HELD_OUT = [e.text for e in load_corpus().held_out]


def _near_tied(source: Path, folder: Path) -> Path:
    """A copy of a tiny classifier whose first two labels differ by a head row change far below
    int8's rounding step, centred on the held-out texts: fp32 splits them between the two
    labels, int8 (which rounds both rows alike) gives them all one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    head = next(m for m in reversed(list(model.modules())) if isinstance(m, torch.nn.Linear))
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    with torch.no_grad():
        model(
            **tokenizer(HELD_OUT, padding=True, truncation=True, max_length=64, return_tensors="pt")
        )
    hook.remove()
    features = seen[0]
    spread = features - features.mean(dim=0)
    direction = spread[spread.norm(dim=1).argmax()]
    step = float(head.weight.detach().abs().max()) / 127  # int8's weight rounding step
    delta = direction / direction.abs().max() * step / 10
    with torch.no_grad():
        head.weight[1] = head.weight[0] + delta
        head.bias[1] = head.bias[0] - delta @ features.mean(dim=0)
        head.bias[2] = head.bias[0] - 100.0  # out of the running
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


INT8_RUNTIMES = ("torch-int8", "onnx-int8")


def _int8_folder(source: Path, work: Path, runtime: str) -> Path:
    """`source`, with the int8 graph an onnx-int8 build ships when `runtime` is onnx-int8."""
    if runtime == "torch-int8":
        return source
    folder = work / "model"
    shutil.copytree(source, folder)
    export_onnx_int8(folder, folder / ONNX_INT8_FILE, ONNX_INT8, min_agreement=0.0)
    return folder


@pytest.mark.parametrize("runtime", INT8_RUNTIMES)
@pytest.mark.parametrize("family", FAMILIES)
def test_int8_predicts_and_explanations_name_the_fp32_weights(
    family: Family, runtime: str, tiny_models: dict[Family, Path], tmp_path: Path
) -> None:
    from support.fake_context import HttpRequest, run_batch

    folder = _int8_folder(tiny_models[family], tmp_path, runtime)
    settings = HandlerSettings(runtime=runtime, max_length=64)  # type: ignore[arg-type]
    int8, fp32 = _service(folder, settings), _service(folder, TORCH)
    assert int8.classifier.fast_logits is not None
    got, expected = (
        _probabilities(int8.classifier, HELD_OUT),
        _probabilities(fp32.classifier, HELD_OUT),
    )
    assert not torch.equal(got, expected)  # really another computation...
    assert float((got - expected).abs().max()) < 0.01  # ...of the same model

    def explained(service: ClassifierService) -> list[dict[str, Any]]:
        request = HttpRequest({"texts": HELD_OUT[:2]}, explain=True)
        (response,) = run_batch(service.handle, FakeContext(model_name="scibert"), [request])
        assert response.status == 200, response.body
        return list(response.body)

    assert [item["explained_with"] for item in explained(int8)] == ["torch-fp32"] * 2
    assert all("explained_with" not in item for item in explained(fp32))


@pytest.mark.parametrize("runtime", INT8_RUNTIMES)
def test_int8_weights_have_a_scale_per_output_channel(
    runtime: str, tiny_bert: Path, tmp_path: Path
) -> None:
    """Per-tensor scales let one large weight coarsen a whole matrix: on the demo classifier
    they moved probabilities by up to 0.2 where per-channel scales moved them by 0.03."""
    from transformers import AutoModelForSequenceClassification

    from scibert_pack.handlers.int8 import int8_model

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    # out_features of every Linear layer, sorted: one scale per output channel of each.
    outputs = sorted(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    if runtime == "torch-int8":
        quantized = [m for m in int8_model(model).modules() if callable(getattr(m, "weight", 0))]
        schemes = {m.weight().qscheme() for m in quantized}
        assert schemes == {torch.per_channel_affine}
        assert sorted(m.weight().q_per_channel_scales().numel() for m in quantized) == outputs
        return
    import onnx

    folder = _int8_folder(tiny_bert, tmp_path, runtime)
    graph = onnx.load(str(folder / ONNX_INT8_FILE)).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    # MatMulInteger(x, w, x_zero_point, w_zero_point): w's zero point has the scale's shape.
    weights = [node.input[3] for node in graph.node if node.op_type == "MatMulInteger"]
    assert sorted(shapes[w][0] for w in weights if shapes[w]) == outputs, {
        w: shapes[w] for w in weights
    }


@pytest.mark.parametrize(
    ("handler", "graph"), [(INT8, None), (ONNX_INT8, ONNX_INT8_FILE)], ids=INT8_RUNTIMES
)
def test_int8_build_reports_its_agreement(
    handler: HandlerSettings, graph: str | None, tiny_bert: Path, tmp_path: Path
) -> None:
    result = build(tiny_bert, BuildSettings(name="tiny", handler=handler), tmp_path / "store")
    check = result.report["runtime_check"]
    assert (check["runtime"], check["checked_texts"]) == (handler.runtime, len(HELD_OUT))
    assert check["label_agreement"] >= check["min_label_agreement"] == 0.98
    assert 0 < check["max_probability_difference"] < 0.01
    assert check["explained_with"] == "torch-fp32"
    names = zipfile.ZipFile(tmp_path / "store" / "model-store" / "tiny.mar").namelist()
    # The archive ships the graph it predicts with, and never an fp32 graph beside it.
    assert [n for n in names if n.endswith((".onnx", ".fp32"))] == ([graph] if graph else [])
    if graph:
        assert check["onnx_bytes"] > 0 and check["versions"]["onnxruntime"] != "not installed"


@pytest.mark.parametrize("runtime", INT8_RUNTIMES)
def test_int8_build_refuses_a_model_int8_flips(
    runtime: str, tiny_bert: Path, tmp_path: Path
) -> None:
    folder = _near_tied(tiny_bert, tmp_path / "tied")
    args = [
        "build",
        str(folder),
        "--name",
        "tied",
        "--runtime",
        runtime,
        "-o",
        str(tmp_path / "store"),
    ]
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code != 0
    assert re.search(
        rf"the int8 model of .* \({runtime}\) gives fp32's label on \d+\.\d+% of 84 "
        r"held-out texts, below --min-label-agreement 0.98",
        ran.stderr,
    ), ran.stderr
    assert "--runtime onnx or torch" in ran.stderr
    assert not (tmp_path / "store" / "model-store").exists()
    # The same model passes when the threshold says flips are acceptable.
    lenient = CliRunner().invoke(cli, [*args, "--min-label-agreement", "0"])
    assert lenient.exit_code == 0, lenient.stderr


@pytest.mark.parametrize("value", [-0.1, 1.5], ids=["negative", "over-one"])
def test_min_label_agreement_is_a_share(value: float) -> None:
    with pytest.raises(
        InputError, match=r"--min-label-agreement .* out of range \(expected 0 to 1"
    ):
        BuildSettings(name="m", min_label_agreement=value)


@pytest.mark.parametrize(
    ("available", "device", "gpu_id", "int8", "expected"),
    [
        ([CUDA, CPU], "auto", 1, False, [(CUDA, {"device_id": 1}), CPU]),
        ([CUDA, CPU], "cuda", "0", False, [(CUDA, {"device_id": 0}), CPU]),
        ([CUDA, CPU], "auto", None, False, [CPU]),
        ([CUDA, CPU], "cpu", 0, False, [CPU]),
        ([CPU], "auto", 0, False, [CPU]),
        (["AzureExecutionProvider", CPU], "cuda", 0, False, [CPU]),
        ([CUDA, CPU], "auto", 0, True, [CPU]),
    ],
    ids=[
        "gpu-given", "device-cuda", "no-gpu-given", "device-cpu", "cpu-only-onnxruntime",
        "other-providers", "int8-stays-on-cpu",
    ],
)  # fmt: skip
def test_onnx_runs_on_the_workers_gpu_only_when_it_has_one_and_cuda(
    available: list[str], device: str, gpu_id: object, int8: bool, expected: list[Any]
) -> None:
    assert choose_providers(available, device, gpu_id, int8=int8) == expected


def test_served_onnx_int8_answers_as_its_build_measured(tiny_bert: Path, tmp_path: Path) -> None:
    # The int8 graph behind the same handler and protocol: the served answers are the ones the
    # same graph gives in process (the graph the build measured), within int8's distance of
    # fp32, and explanations say they come from the fp32 weights.
    settings = BuildSettings(name="tiny", profile="local", max_batch_delay_ms=5, handler=ONNX_INT8)
    texts = HELD_OUT[:24]
    with serving(tiny_bert, tmp_path, settings) as server:
        outputs = {o["name"]: o for o in _post(server, "infer", texts)["outputs"]}
        items = _post(server, "explain", texts[:2])["outputs"][0]["data"]
        store = tmp_path / "store" / "model-store" / "tiny.mar"
        folder = shutil.copytree(tiny_bert, tmp_path / "local")
        (folder / ONNX_INT8_FILE).write_bytes(zipfile.ZipFile(store).read(ONNX_INT8_FILE))
    width = len(outputs["probabilities"]["data"]) // len(texts)
    served = torch.tensor(outputs["probabilities"]["data"]).reshape(len(texts), width)
    same_graph = _probabilities(_service(folder, ONNX_INT8).classifier, texts)
    fp32 = _probabilities(_service(tiny_bert, TORCH).classifier, texts)
    assert float((served - same_graph).abs().max()) <= PROBABILITY_TOLERANCE
    assert 0 < float((served - fp32).abs().max()) < 0.01
    assert [item["explained_with"] for item in items] == ["torch-fp32"] * 2
