"""What a person reads: numbers, renamed options, advice for the wrong kind of folder, the URLs
`serve` prints, the config.properties text and the setup script's progress."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.cli.bench import bench as bench_command
from scibert_pack.cli.build import build as build_command
from scibert_pack.cli.manifest import manifest as manifest_command
from scibert_pack.cli.query import _number, _ranked_labels
from scibert_pack.cli.query import explain as explain_command
from scibert_pack.cli.query import predict as predict_command
from scibert_pack.cli.serve import serve as serve_command
from scibert_pack.cli.serve import url_lines

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("value", "sign", "shown"),
    [
        (-3.2e-05, True, "-3.2e-05"),
        (3.2e-05, True, "+3.2e-05"),
        (-4e-7, True, "-4.0e-07"),
        (-0.0, True, "0"),
        (0.0, False, "0"),
        (0.0123, True, "+0.012"),
        (-0.0789, True, "-0.079"),
        (0.912, False, "0.912"),
        (1.0, False, "1.000"),
        (0.00099, False, "9.9e-04"),
        (0.001, False, "0.001"),
    ],
    ids=[
        "tiny-negative", "tiny-positive", "tinier", "negative-zero", "zero", "small", "negative",
        "probability", "one", "below-a-thousandth", "a-thousandth",
    ],
)  # fmt: skip
def test_numbers_never_read_as_minus_zero(value: float, sign: bool, shown: str) -> None:
    assert _number(value, sign=sign) == shown


def test_every_label_is_shown_most_likely_first() -> None:
    probabilities = {"biology": 0.2, "chemistry": 0.7, "physics": 0.09999, "maths": 1e-5}
    assert _ranked_labels(probabilities, show_all=False) == (
        "chemistry 0.700, biology 0.200, physics 0.100, maths 1.0e-05"
    )


def test_many_labels_say_how_to_see_the_rest() -> None:
    probabilities = {f"l{i:02d}": (20 - i) / 210 for i in range(20)}
    shown = _ranked_labels(probabilities, show_all=False)
    assert shown.startswith("l00 0.095, l01 0.090, ")
    assert shown.endswith(", l09 0.052 (and 10 less likely: --all-labels shows them)")
    assert _ranked_labels(probabilities, show_all=True).endswith(", l19 0.005")


# -- one name for one thing: the new spelling in --help, the old one still accepted ----------


@pytest.mark.parametrize(
    ("command", "args", "param", "new", "old"),
    [
        (serve_command, ["./out"], "inference_port", "--inference-port", "--port"),
        (explain_command, ["t", "--model", "m"], "n_steps", "--explain-steps", "--steps"),
        (explain_command, ["t", "--model", "m"], "n_steps", "--explain-steps", "--n-steps"),
    ],
    ids=["serve-port", "explain-steps", "explain-n-steps"],
)
def test_renamed_options_keep_their_old_spelling_out_of_help(
    command: object, args: list[str], param: str, new: str, old: str
) -> None:
    assert isinstance(command, type(serve_command))
    for spelling in (new, old):
        ctx = command.make_context("scibert-pack", [*args, spelling, "9123"])
        assert ctx.params[param] == 9123, spelling
    help_text = command.get_help(
        command.make_context("scibert-pack", ["--help"], resilient_parsing=True)
    )
    assert f"{new} " in help_text
    assert f"{old} " not in help_text and f"{old}," not in help_text


@pytest.mark.parametrize(
    ("command", "args", "old"),
    [
        (build_command, ["./m"], "--name"),
        (predict_command, ["t"], "--model"),
        (explain_command, ["t"], "--model"),
        (bench_command, [], "--model"),
    ],
    ids=["build", "predict", "explain", "bench"],
)
def test_the_model_name_keeps_its_old_spellings_out_of_help(
    command: object, args: list[str], old: str
) -> None:
    assert isinstance(command, type(serve_command))
    for spelling in ("--model-name", old):
        ctx = command.make_context("scibert-pack", [*args, spelling, "scibert"])
        assert "scibert" in ctx.params.values(), spelling
    help_text = command.get_help(
        command.make_context("scibert-pack", ["--help"], resilient_parsing=True)
    )
    assert "--model-name " in help_text
    assert f"{old} " not in help_text and f"{old}," not in help_text


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (build_command, "--inference-port"),
        (serve_command, "--inference-port"),
        (build_command, "--explain-steps"),
        (explain_command, "--explain-steps"),
        (build_command, "--model-name"),
        (predict_command, "--model-name"),
        (explain_command, "--model-name"),
        (bench_command, "--model-name"),
        (manifest_command, "--model-name"),
    ],
    ids=[
        "build-port", "serve-port", "build-steps", "explain-steps",
        "build-model", "predict-model", "explain-model", "bench-model", "manifest-model",
    ],
)  # fmt: skip
def test_the_same_thing_has_the_same_name_in_every_command(command: object, option: str) -> None:
    assert isinstance(command, type(serve_command))
    assert any(option in p.opts for p in command.params)


def test_a_wrong_value_names_the_new_spelling() -> None:
    result = CliRunner().invoke(cli, ["serve", "./out", "--port", "many"])
    assert result.exit_code == 2
    assert "Invalid value for '--inference-port': 'many' is not a valid integer" in result.stderr


# -- the other kind of folder ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cwd", "arg", "model", "store"),
    [
        (".", "my-scibert", "./my-scibert", "./my-scibert-store"),
        (".", "./my-scibert/", "./my-scibert", "./my-scibert-store"),
        ("my-scibert", ".", ".", "../my-scibert-store"),
        ("my-scibert", "../my-scibert", "../my-scibert", "../my-scibert-store"),
        (".", "{tmp}/my-scibert", "{tmp}/my-scibert", "{tmp}/my-scibert-store"),
    ],
    ids=["relative", "dot-slash", "inside-it", "dot-dot", "absolute"],
)
def test_serve_on_a_model_folder_says_build_it_first(
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cwd: str,
    arg: str,
    model: str,
    store: str,
) -> None:
    shutil.copytree(tiny_bert, tmp_path / "my-scibert")
    monkeypatch.chdir(tmp_path / cwd)
    result = CliRunner().invoke(cli, ["serve", arg.format(tmp=tmp_path)])
    assert result.exit_code == 2
    model, store = model.format(tmp=tmp_path), store.format(tmp=tmp_path)
    assert result.stderr == (
        f"Error: {model} is a model folder (config.json and weights), not a model store "
        f"built by scibert-pack; build it first: scibert-pack build {model} --model-name NAME "
        f"-o {store}, then scibert-pack serve {store}\n"
    )


@pytest.fixture(scope="module")
def built_store(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("built") / "out"
    build(tiny_bert, BuildSettings(name="m"), store)
    return store


@pytest.mark.parametrize(
    ("remove", "markers"),
    [
        ((), "build-report.json, config/config.properties, model-store"),
        (("build-report.json",), "config/config.properties, model-store"),
        (("build-report.json", "config"), "model-store"),
    ],
    ids=["whole-store", "no-report", "only-model-store"],
)
def test_build_on_a_built_store_says_serve_it(
    built_store: Path, tmp_path: Path, remove: tuple[str, ...], markers: str
) -> None:
    store = tmp_path / "out"
    shutil.copytree(built_store, store)
    for name in remove:
        target = store / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    result = CliRunner().invoke(cli, ["build", str(store), "--name", "again", "-q"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {store} is a model store built by scibert-pack (it has {markers}), not a "
        f"model folder; serve it with: scibert-pack serve {store}; to build again, pass the "
        "folder model.save_pretrained(...) wrote\n"
    )


def test_serve_then_build_round_trip_advice_runs(tiny_bert: Path, tmp_path: Path) -> None:
    """The command `serve` suggests for a model folder builds a store `serve` accepts."""
    model = tmp_path / "model"
    model.symlink_to(tiny_bert, target_is_directory=True)
    advice = CliRunner().invoke(cli, ["serve", str(model)]).stderr
    command = advice.split("build it first: ", 1)[1].split(", then ", 1)[0].split()
    assert command[:3] == ["scibert-pack", "build", str(model)]
    argv = [a if a != "NAME" else "m" for a in command[1:]]
    built = CliRunner().invoke(cli, [*argv, "-q"])
    assert built.exit_code == 0, built.output
    assert (tmp_path / "model-store" / "config" / "config.properties").is_file()


# -- serve's URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize("key_file", [None, Path("/run/key_file.json")], ids=["open", "token"])
def test_serve_lists_every_route_of_the_readme(key_file: Path | None) -> None:
    lines = url_lines(
        "scibert",
        "http://127.0.0.1:8085",
        "http://127.0.0.1:8081",
        "http://127.0.0.1:8082",
        key_file=key_file,
    )
    assert lines == [
        "model:          scibert (ready)",
        "v2 infer:       http://127.0.0.1:8085/v2/models/scibert/infer",
        "v2 explain:     http://127.0.0.1:8085/v2/models/scibert/explain",
        "v1 predict:     http://127.0.0.1:8085/v1/models/scibert:predict",
        "v1 explain:     http://127.0.0.1:8085/v1/models/scibert:explain",
        "native predict: http://127.0.0.1:8085/predictions/scibert",
        "native explain: http://127.0.0.1:8085/explanations/scibert",
        "management:     http://127.0.0.1:8081/models/scibert",
        "metrics:        http://127.0.0.1:8082/metrics",
    ] + (["key file:       /run/key_file.json"] if key_file else [])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    routes = ("/v2/models/NAME/infer", "/v2/models/NAME/explain", "/v1/models/NAME:predict",
              "/v1/models/NAME:explain", "/predictions/NAME", "/explanations/NAME")  # fmt: skip
    for route in routes:
        assert f"`{route}`" in readme, route
        assert any(line.endswith(route.replace("NAME", "scibert")) for line in lines), route


# -- files a person opens ----------------------------------------------------------------------


def test_config_properties_ends_with_one_newline(built_store: Path) -> None:
    text = (built_store / "config" / "config.properties").read_bytes()
    assert text.endswith(b"\n") and not text.endswith(b"\n\n")


# -- the setup script says what it does while pip is silent -----------------------------------


JAVA_FOUND = '[setup 4/4] java found (openjdk version "17.0.15" 2025-04-15): nothing to install\n'


def _steps(
    script: str, tick_s: int = 1, path: str = "/usr/bin:/bin"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source scripts/setup-steps.sh; {script}"],
        cwd=ROOT,
        env={"PATH": path, "SETUP_TICK_S": str(tick_s)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_setup_step_shows_the_step_and_elapsed_time_while_it_runs(tmp_path: Path) -> None:
    log = tmp_path / "stderr"
    # The step's command waits (bounded) until the step has said it is still running.
    wait = tmp_path / "wait.sh"
    wait.write_text(
        f"for i in $(seq 300); do grep -q ' s$' {log} && exit 0; sleep 0.1; done\nexit 9\n"
    )
    done = _steps(f"step 2 'installing things (pip)' bash {wait} 2>>{log}; echo ok")
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "[setup 2/4] installing things (pip) ..."
    assert lines[1].startswith("[setup 2/4] installing things (pip) ... ")
    assert lines[1].endswith(" s") and lines[1].split()[-2].isdigit()
    assert lines[-1].startswith("[setup 2/4] installing things (pip) done in ")


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("step 3 'installing x' true 2>/dev/null; ensure_java", JAVA_FOUND),
        ("ensure_java", ""),
    ],
    ids=["after-a-step-says-it-has-nothing-to-do", "quiet-when-nothing-ran"],
)
def test_setup_java_step_with_java_on_the_path(tmp_path: Path, script: str, expected: str) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    fake.chmod(0o755)
    done = _steps(script, path=f"{tmp_path}:/usr/bin:/bin")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", expected)


def test_a_failed_setup_step_stops_the_script_with_its_exit_code() -> None:
    done = _steps("step 3 'installing x' sh -c 'exit 7'; echo unreached", tick_s=15)
    assert done.returncode == 7 and done.stdout == ""
    first, last = done.stderr.splitlines()
    assert first == "[setup 3/4] installing x ..."
    assert re.fullmatch(r"\[setup 3/4\] installing x failed after \d+ s \(exit code 7\)", last)
