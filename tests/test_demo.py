"""`scibert-pack demo` end to end with the tiny classifier instead of training: build, a real
TorchServe on free ports, v2 infer and explain, the HTML report, uploads to a real local S3
server and a PVC-style folder, the manifest; twice in the same work folder; everything it
started stopped, also when interrupted. And `scibert-pack explain` for any number of texts: in
requests the server accepts, answers in input order, the HTML report with probabilities, and a
413 that names the limit and the --batch-texts that fits."""

from __future__ import annotations

import html
import json
import re
import socket
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner, Result
from support.build_and_serve import serving
from support.tiny_models import LABELS

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.demo.run import DEMO_TEXTS, DemoResult, DemoSettings, run_demo
from scibert_pack.handlers.settings import HandlerSettings
from scibert_pack.serving.server import TorchServeProcess

pytestmark = [pytest.mark.server, pytest.mark.s3, pytest.mark.slow]

VERSION = r"1\.0-[0-9a-f]{12}"
STEPS = [
    "build",
    "serve: start TorchServe",
    "v2 infer + explain",
    "serve: stop TorchServe",
    "report",
    "upload to S3",
    "upload to PVC",
    "manifest",
]


def _closed(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return False
    except OSError:
        return True


def _sections(page: str) -> list[int]:
    """Per explanation section, the number of word spans."""

    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.counts: list[int] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            classes = (dict(attrs).get("class") or "").split()
            if tag == "section" and "explanation" in classes:
                self.counts.append(0)
            elif tag == "span" and "w" in classes:
                self.counts[-1] += 1

    parser = Parser()
    parser.feed(page)
    return parser.counts


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "work"


@pytest.fixture(scope="module")
def first(workdir: Path, tiny_bert: Path) -> tuple[DemoResult, list[str]]:
    messages: list[str] = []
    result = run_demo(DemoSettings(workdir, model_dir=tiny_bert), progress=messages.append)
    return result, messages


@pytest.fixture(scope="module")
def second(first: tuple[DemoResult, list[str]], workdir: Path, tiny_bert: Path) -> str:
    """The CLI, run again in the same work folder."""
    result = CliRunner().invoke(
        cli, ["demo", "--workdir", str(workdir), "--model-dir", str(tiny_bert)]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_step_ran_in_order(first: tuple[DemoResult, list[str]]) -> None:
    result, messages = first
    assert [s.name for s in result.steps] == STEPS
    assert result.training is None
    assert f"using the classifier in {result.model_dir} (no training)" in messages


def test_predictions_and_explanations_for_every_text(first: tuple[DemoResult, list[str]]) -> None:
    result, _ = first
    assert [p.text for p in result.predictions] == list(DEMO_TEXTS)
    assert [x.text for x in result.explanations] == list(DEMO_TEXTS)
    for p, x in zip(result.predictions, result.explanations, strict=True):
        assert set(p.probabilities) == set(LABELS.values())
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert x.label == p.label
        assert len(x.words) == len(x.importances) > 2
    # merge_subwords is on in the demo's build: the blog's words come back whole
    assert "bioavailability" in result.explanations[0].words


def test_report_has_a_section_per_text(first: tuple[DemoResult, list[str]]) -> None:
    result, _ = first
    page = result.report.read_text(encoding="utf-8")
    assert _sections(page) == [len(x.words) for x in result.explanations]
    assert f'<p class="text">{DEMO_TEXTS[0]}</p>' in page


def test_servers_are_stopped(first: tuple[DemoResult, list[str]]) -> None:
    result, _ = first
    assert _closed(result.served_at)
    assert _closed(result.s3_endpoint)


def test_uploads_land_in_versioned_locations(first: tuple[DemoResult, list[str]]) -> None:
    result, _ = first
    assert re.fullmatch(rf"s3://demo-models/sci-fields/{VERSION}/", result.s3_uri)
    assert re.fullmatch(rf"pvc://demo-claim/models/{VERSION}/?", result.pvc_uri)
    version = result.pvc_uri.rstrip("/").rsplit("/", 1)[1]
    assert result.s3_uri.rstrip("/").endswith(version)
    copy = result.pvc_mount / "models" / version
    for name in ("config/config.properties", "model-store/sci-fields.mar"):
        assert (copy / name).read_bytes() == (result.store / name).read_bytes()
    assert (result.pvc_mount / "models" / f"{version}.complete.json").is_file()


def test_manifest_serves_the_s3_copy(first: tuple[DemoResult, list[str]]) -> None:
    result, _ = first
    documents = list(yaml.safe_load_all(result.manifest.read_text(encoding="utf-8")))
    (isvc,) = [d for d in documents if d and d["kind"] == "InferenceService"]
    assert isvc["metadata"]["name"] == "sci-fields"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == result.s3_uri
    assert result.dockerfile.read_text(encoding="utf-8").startswith("#")


def test_summary_file(first: tuple[DemoResult, list[str]]) -> None:
    result, _ = first
    summary = json.loads(result.summary_file.read_text(encoding="utf-8"))
    assert summary["storage_uris"] == {"s3": result.s3_uri, "pvc": result.pvc_uri}
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert [p["label"] for p in summary["predictions"]] == [p.label for p in result.predictions]


def test_second_run_in_the_same_folder(first: tuple[DemoResult, list[str]], second: str) -> None:
    result, _ = first
    lines = second.splitlines()
    assert lines[0].startswith("scibert-pack demo: done in ")
    assert lines[0].endswith(f", in {result.workdir}")
    assert f"model       {result.model_dir} (given, not trained)" in lines
    # Builds are reproducible: the same store content, so the same versions as the first run.
    assert any(line.startswith(f"storageUri  {result.s3_uri}  (local S3 server ") for line in lines)
    assert f"storageUri  {result.pvc_uri}  (claim folder {result.pvc_mount})" in lines
    assert f"report      {result.report}" in lines
    for text in DEMO_TEXTS:
        assert any(line.endswith(f"  {text}") for line in lines), text
    steps = lines[lines.index("steps") + 1 : lines.index("steps") + 1 + len(STEPS)]
    assert [re.sub(r"\s+\d+\.\d s$", "", s).strip() for s in steps] == STEPS
    assert lines[-1] == "TorchServe and the local S3 server are stopped."


@pytest.mark.parametrize(
    ("interrupt_at", "server_line"),
    [
        pytest.param("== v2 infer + explain", r"starting TorchServe on (\S+)", id="torchserve"),
        pytest.param(
            "local S3 server (moto) on", r"local S3 server \(moto\) on (\S+)", id="s3-server"
        ),
    ],
)
def test_interrupted_run_stops_what_it_started(
    tmp_path: Path, tiny_bert: Path, interrupt_at: str, server_line: str
) -> None:
    urls: list[str] = []

    def progress(message: str) -> None:
        if match := re.match(server_line, message):
            urls.append(match.group(1))
        if message.startswith(interrupt_at):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_demo(DemoSettings(tmp_path / "work", model_dir=tiny_bert), progress=progress)
    (url,) = urls
    assert _closed(url)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--model-dir", "nope"],
            "Error: Invalid value for '--model-dir': Directory 'nope' does not exist.",
            id="missing-model-dir",
        ),
        pytest.param(
            ["--text", " "],
            "Error: the demo needs at least one text, and no empty ones; pass non-empty texts, "
            "or none for the built-in ones",
            id="empty-text",
        ),
        pytest.param(
            ["--epochs", "0"],
            "Error: training epochs 0 is out of range (expected 1 to 100); set the epochs "
            "between 1 and 100",
            id="epochs",
        ),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["demo", "--workdir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert result.stderr.rstrip().splitlines()[-1] == message


# --- `scibert-pack explain`: any number of texts, in requests the server accepts -------------

EXPLAIN_TEXTS = [
    "the protein folds <inside> the cell .",
    "the catalyst speeds up the reaction .",
    "quantum states of the photon decay .",
    "cells divide and the tissue grows .",
    "polymer chains form bonds when heated .",
    "the electron beam scatters from the crystal .",
    "gene expression in mice changes .",
]
MAX_EXPLAIN_TEXTS = 3


@pytest.fixture(scope="module")
def explain_server(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeProcess]:
    handler = HandlerSettings(explain_steps=8, max_explain_texts=MAX_EXPLAIN_TEXTS)
    settings = BuildSettings(name="tiny", handler=handler, batch_size=4, max_batch_delay_ms=5)
    with serving(tiny_bert, tmp_path_factory.mktemp("explain"), settings) as server:
        yield server


def _explain(server: TorchServeProcess, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["explain", *EXPLAIN_TEXTS, "--url", server.inference_url, "--model", "tiny", *args]
    )


def _probabilities(page: str) -> list[dict[str, float]]:
    """Per explanation section, the label -> probability rows of its table."""
    sections = page.split('<section class="explanation"')[1:]
    return [
        {label: float(p) for label, p in re.findall(r"<tr><td>([^<]+)</td><td>([0-9.]+)</td>", s)}
        for s in sections
    ]


@pytest.mark.parametrize(
    ("batch_texts", "concurrency", "progress"),
    [
        pytest.param("3", "1", ["explained 3/7 texts", "explained 6/7 texts"], id="3-sequential"),
        pytest.param(
            "2",
            "3",
            ["explained 2/7 texts", "explained 4/7 texts", "explained 6/7 texts"],
            id="2-concurrent",
        ),
        pytest.param("7", "1", [], id="one-request-over-the-limit-refused"),
    ],
)
def test_explain_html_for_any_number_of_texts(
    explain_server: TorchServeProcess,
    tmp_path: Path,
    batch_texts: str,
    concurrency: str,
    progress: list[str],
) -> None:
    report = tmp_path / "out" / "why.html"
    args = ["--html", str(report), "--batch-texts", batch_texts, "--concurrency", concurrency]
    result = _explain(explain_server, *args)
    if int(batch_texts) > MAX_EXPLAIN_TEXTS:
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == (
            f"Error: the server refused an explain request of 7 texts as too large "
            f"({explain_server.inference_url}/v2/models/tiny/explain answered 413: explain "
            "request holds 7 texts, more than the limit of 3 (max_explain_texts); split it, or "
            "ask the infer route for predictions only); pass --batch-texts 3 (or fewer) to "
            "stay within that limit"
        )
        assert not report.exists()
        return
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [*progress, "explained 7/7 texts", f"wrote {report}"]
    shown = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    assert shown == EXPLAIN_TEXTS  # in input order, whatever order the answers came in
    page = report.read_text(encoding="utf-8")
    assert len(_sections(page)) == len(EXPLAIN_TEXTS)
    assert "folds &lt;inside&gt; the cell" in page
    texts = re.findall(r'<p class="text">(.*?)</p>', page)
    assert texts == [html.escape(t) for t in EXPLAIN_TEXTS]
    probabilities = _probabilities(page)
    assert [set(p) for p in probabilities] == [set(LABELS.values())] * len(EXPLAIN_TEXTS)
    for p in probabilities:
        assert sum(p.values()) == pytest.approx(1.0, abs=0.01)


def test_explain_json_joins_the_answers_in_order(explain_server: TorchServeProcess) -> None:
    result = _explain(explain_server, "--json", "--batch-texts", "3")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    (output,) = body["outputs"]
    assert (output["name"], output["shape"]) == ("explain", [len(EXPLAIN_TEXTS)])
    assert body["model_name"] == "tiny"
    assert "id" not in body  # three requests, three ids: none speaks for the whole
    # The words of each explanation are the words of its own text, in input order (the first
    # text's "<" and ">" are not in the tiny model's vocabulary).
    for item, text in zip(output["data"][1:], EXPLAIN_TEXTS[1:], strict=True):
        assert [w for w in item["words"] if not w.startswith("[")] == text.split()


def test_explain_work_cap_names_the_batch_that_fits(explain_server: TorchServeProcess) -> None:
    # The archive's default explain work cap: 1000 text-steps per request; 3 x 400 is over.
    result = _explain(explain_server, "--steps", "400", "--batch-texts", "3")
    assert result.exit_code == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: the server refused an explain request of 3 texts as too large (")
    assert "(max_explain_work)" in last
    assert last.endswith("; pass --batch-texts 2 (or fewer) to stay within that limit")
    passed = _explain(explain_server, "--steps", "400", "--batch-texts", "2")
    assert passed.exit_code == 0, passed.output
