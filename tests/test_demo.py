"""`scibert-pack demo` end to end with the tiny classifier instead of training: build, a real
TorchServe on free ports, v2 infer and explain, the HTML report, uploads to a real local S3
server and a PVC-style folder, the manifest; twice in the same work folder; everything it
started stopped, also when interrupted. And `scibert-pack explain --html`."""

from __future__ import annotations

import json
import re
import socket
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner
from served import serving
from tiny_models import LABELS

from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.demo.run import DEMO_TEXTS, DemoResult, DemoSettings, run_demo
from scibert_pack.handlers.settings import HandlerSettings

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


def test_explain_html_writes_the_report(tmp_path: Path, tiny_bert: Path) -> None:
    settings = BuildSettings(name="tiny", handler=HandlerSettings(explain_steps=8))
    report = tmp_path / "out" / "why.html"
    texts = ["the protein folds <inside> the cell .", "the catalyst speeds up the reaction ."]
    with serving(tiny_bert, tmp_path, settings) as server:
        result = CliRunner().invoke(
            cli,
            [
                "explain",
                *texts,
                "--url",
                server.inference_url,
                "--model",
                "tiny",
                "--html",
                str(report),
            ],
        )
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote {report}\n"
    assert result.stdout.startswith("the protein folds <inside> the cell .\n  label: ")
    page = report.read_text(encoding="utf-8")
    assert len(_sections(page)) == 2
    assert "folds &lt;inside&gt; the cell" in page
