"""The handler runs as the archive ships it: handlers/*.py copied as package
`scibert_pack_handlers`, with scibert-pack and TorchServe unimportable and the handler modules
barred from importing any of scibert-pack's other dependencies."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.tiny_models import Family

HANDLERS = Path(__file__).resolve().parents[1] / "handlers"
TESTS = Path(__file__).resolve().parent
BLOCKED = [
    "scibert_pack",
    "click",
    "boto3",
    "botocore",
    "yaml",
    "requests",
    "ts",
    "moto",
    "jsonschema",
]

SCRIPT = textwrap.dedent(
    """
    import json, sys

    BLOCKED = {blocked!r}

    # scibert_pack and ts are refused to everyone; the other BLOCKED names only to handler
    # modules (transformers itself may use yaml or requests). The __import__ hook also sees
    # imports of modules already loaded, which the meta path finder would not.
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("scibert_pack", "ts"):
                raise ImportError(f"blocked import of {{name}} (the handler must not need it)")
            return None

    import builtins
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {{}}).get("__name__", "")
        if level == 0 and importer.startswith("scibert_pack_handlers"):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {{name}} by {{importer}}")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
    sys.meta_path.insert(0, Blocker())
    sys.path[:0] = [{archive!r}, {tests!r}]

    from support.fake_context import FakeContext, FakeMetrics, HttpRequest, run_batch
    from scibert_pack_handlers.torchserve_entry import handle

    metrics = FakeMetrics()
    context = FakeContext({model_dir!r}, handler_settings={{"explain_steps": 10}},
                          model_name="scibert", model_version="1.0", metrics=metrics)
    assert handle(None, context) is None
    predicted = run_batch(handle, context, [HttpRequest("cells divide", content_type="text/plain")])
    # Captum is imported by the first explanation, not by loading or predicting.
    captum_before = sorted(m for m in sys.modules if m.split(".")[0] == "captum")
    requests = [
        HttpRequest({{"id": "a", "inputs": [{{"name": "t", "shape": -1, "datatype": "BYTES",
                     "data": json.dumps({{"text": "Risk assessment implications."}})}}]}},
                    route="v2"),
        HttpRequest({{"instances": ["quantum states"]}}, explain=True, route="v1"),
        HttpRequest(b"{{", content_type="application/json"),
    ]
    responses = run_batch(handle, context, requests)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("scibert_pack", "ts"))
    print(json.dumps({{"statuses": [r.status for r in [*predicted, *responses]],
                      "captum_before_explain": captum_before,
                      "captum_after": "captum.attr" in sys.modules,
                      "v2_id": responses[0].body["id"],
                      "explained": len(responses[1].body["explanations"]),
                      "metrics": sorted({{m.name for m in metrics.recorded}}),
                      "loaded": loaded}}))
    """
)


def test_handler_runs_without_scibert_pack_and_its_dependencies(
    tmp_path: Path, tiny_models: dict[Family, Path]
) -> None:
    package = tmp_path / "archive" / "scibert_pack_handlers"
    package.mkdir(parents=True)
    for source in HANDLERS.glob("*.py"):
        shutil.copy(source, package / source.name)
    script = SCRIPT.format(
        blocked=BLOCKED,
        archive=str(tmp_path / "archive"),
        tests=str(TESTS),
        model_dir=str(tiny_models["distilbert"]),
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary == (
        '{"statuses": [200, 200, 200, 400], "captum_before_explain": [], "captum_after": true, '
        '"v2_id": "a", "explained": 1, "metrics": '
        '["scibert_batches_total", "scibert_explain_ms", "scibert_explain_steps", '
        '"scibert_forward_passes_total", "scibert_inference_ms", "scibert_requests_total", '
        '"scibert_texts_per_batch"], "loaded": []}'
    )


ALLOWED_THIRD_PARTY = {"torch", "transformers", "captum", "numpy"}
# TorchServe's own package exists only inside its worker: imported inside a function, never at
# module level, so the handlers still load (and are tested) without a TorchServe around them.
# onnxruntime too: an optional worker dependency, imported only when an archive built with
# --runtime onnx loads (handlers/onnx_runtime.py).
WORKER_ONLY = {"ts", "onnxruntime"}


def absolute_imports(source: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(source.read_text(), str(source))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("source", sorted(HANDLERS.glob("*.py")), ids=lambda p: p.name)
def test_handler_modules_import_only_stdlib_torch_transformers_captum(source: Path) -> None:
    allowed = set(sys.stdlib_module_names) | ALLOWED_THIRD_PARTY
    foreign = absolute_imports(source) - allowed - WORKER_ONLY
    assert foreign == set(), f"{source.name} imports {sorted(foreign)}; use relative imports"
    at_import = absolute_imports(source, top_level_only=True) - allowed
    assert at_import == set(), f"{source.name} imports {sorted(at_import)} at module level"
