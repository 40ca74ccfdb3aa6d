"""`scibert-pack predict` and `scibert-pack explain`: v2 requests to a running server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from scibert_pack.cli._console import Console
from scibert_pack.cli._options import RenamedOption, setting_options
from scibert_pack.client.batch import BatchSettings, ExplainSettings
from scibert_pack.config.properties import LOCAL_INFERENCE_URL

# Labels shown per text unless --all-labels: a 100-class model would bury the answer.
_LABELS_SHOWN = 10


def _client_options(func: Callable[..., Any], *, texts_required: bool = True) -> Callable[..., Any]:
    options = [
        click.argument("texts", nargs=-1, required=texts_required),
        click.option("--url", default=LOCAL_INFERENCE_URL, show_default=True),
        click.option(
            "--model-name",
            "--model",
            "model",
            cls=RenamedOption,
            old=["--model"],
            required=True,
            help="Model name (the URL key).",
        ),
        click.option(
            "--token",
            envvar="SCIBERT_PACK_TOKEN",
            help="Bearer token (archives built with --token-auth), sent to --url whatever "
            "host it names.",
        ),
        click.option(
            "--key-file",
            type=click.Path(path_type=Path, dir_okay=False),
            help="key_file.json written by TorchServe (default: the one `serve` wrote for the "
            "loopback server at exactly --url; it never goes to another host or port).",
        ),
        click.option("--timeout", default=300.0, show_default=True, help="Seconds."),
        click.option("--json", "as_json", is_flag=True, help="Print the raw v2 response."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _client(url: str, model: str, token: str | None, key_file: Path | None, timeout: float) -> Any:
    from scibert_pack.client.inference_client import InferenceClient, find_token

    return InferenceClient(
        url, model, token=find_token(url, token=token, key_file=key_file), timeout_s=timeout
    )


# `predict --input` went through, but some rows got error records instead of predictions.
ROWS_FAILED_EXIT_CODE = 4


def _optional_texts(func: Callable[..., Any]) -> Callable[..., Any]:
    return _client_options(func, texts_required=False)


@click.command()
@_optional_texts
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Batch mode: a file of texts (one per line, JSON lines or CSV) instead of TEXTS.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Batch mode: JSON lines results (default: stdout). If it exists, finished rows are "
    "skipped and new ones appended; rows that failed on the server are asked again.",
)
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["lines", "jsonl", "csv"]),
    help="Input format (default: from the extension: .txt, .jsonl, .csv).",
)
@click.option(
    "--text-field",
    "--column",
    "text_field",
    default="text",
    show_default=True,
    help="JSON field or CSV column that holds the text.",
)
@setting_options(BatchSettings, "concurrency", "texts_per_request", "retries")
@click.option(
    "--all-labels",
    is_flag=True,
    help=f"Show every label's probability (default: the {_LABELS_SHOWN} most likely).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def predict(
    texts: tuple[str, ...],
    url: str,
    model: str,
    token: str | None,
    key_file: Path | None,
    timeout: float,
    as_json: bool,
    input_path: Path | None,
    output_path: Path | None,
    input_format: str | None,
    text_field: str,
    concurrency: int,
    texts_per_request: int,
    retries: int,
    all_labels: bool,
    quiet: bool,
) -> None:
    """Classify TEXTS with a served model (KServe v2 infer), or every text of --input.

    For TEXTS: each text, its label, and the labels' probabilities, most likely first
    (--json: the raw v2 response).

    Batch mode writes one JSON line per text, in input order: row, line (and id when the
    record has one), text, then label, probabilities and truncated, or error and status.
    Exit code 0: every row has its prediction; 4: the job went through but some rows have
    error records; 1: the run stopped (no server answer); 2: bad input; 130: interrupted.
    """
    console = Console(quiet=quiet)
    if input_path is not None:
        if texts:
            raise click.UsageError("give TEXTS or --input, not both")
        if as_json:
            raise click.UsageError(
                "--json prints the raw response for TEXTS; --input always writes JSON lines "
                "(drop --json)"
            )
        if output_path is not None and _same_file(input_path, output_path):
            raise click.UsageError(
                f"--output {output_path} is the --input file: results would be appended to "
                "the texts; pass another --output"
            )
        _predict_file(
            console,
            _client(url, model, token, key_file, timeout),
            input_path,
            output_path,
            input_format,
            text_field,
            (concurrency, texts_per_request, retries),
        )
        return
    if not texts:
        raise click.UsageError("give some TEXTS to classify, or --input FILE")
    if output_path is not None:
        raise click.UsageError("--output goes with --input")
    predictions, raw = _client(url, model, token, key_file, timeout).infer(list(texts))
    if as_json:
        console.json(raw)
        return
    for p in predictions:
        console.data(_flat(p.text))
        flag = "  (truncated to the model's maximum length)" if p.truncated else ""
        console.data(f"  label: {p.label}  p: {_number(p.probabilities[p.label])}{flag}")
        console.data(f"  probabilities: {_ranked_labels(p.probabilities, all_labels)}")


def _ranked_labels(probabilities: dict[str, float], show_all: bool) -> str:
    ranked = sorted(probabilities.items(), key=lambda pair: pair[1], reverse=True)
    shown = ranked if show_all else ranked[:_LABELS_SHOWN]
    text = ", ".join(f"{label} {_number(p)}" for label, p in shown)
    hidden = len(ranked) - len(shown)
    return text + (f" (and {hidden} less likely: --all-labels shows them)" if hidden else "")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


def _predict_file(
    console: Console,
    client: Any,
    input_path: Path,
    output_path: Path | None,
    input_format: str | None,
    text_field: str,
    limits: tuple[int, int, int],
) -> None:
    import sys

    from scibert_pack import api
    from scibert_pack.client.batch import BatchProgress

    concurrency, texts_per_request, retries = limits
    last = [0.0]

    def show(p: BatchProgress) -> None:
        if p.elapsed_s - last[0] >= 1.0 or p.done == p.total:
            last[0] = p.elapsed_s
            console.progress(
                f"{p.done}/{p.total} rows, {p.rows_per_s:.1f} rows/s, {p.errors} errors, "
                f"{p.retries} retries"
            )

    try:
        done = api.predict_file(
            client,
            input_path,
            output_path if output_path is not None else sys.stdout,
            input_format=input_format,  # type: ignore[arg-type]  # click.Choice
            text_field=text_field,
            settings=BatchSettings(concurrency, texts_per_request, retries),
            progress=console.progress,
            on_batch=show,
        )
    except KeyboardInterrupt:
        if output_path is not None:
            console.warn(
                f"interrupted: the rows finished so far are in {output_path}; rerun the same "
                "command to resume"
            )
        else:
            console.warn("interrupted: the rows finished so far were written to stdout")
        raise click.exceptions.Exit(130) from None
    final = done.progress
    where = f" to {output_path}" if output_path else ""
    failed = ""
    if final.server_errors:
        failed = f", {final.server_errors} failed on the server (5xx)"
        failed += ": rerun the same command to ask them again" if output_path else ""
    console.progress(
        f"wrote {final.written} rows{where} in {final.elapsed_s:.1f} s "
        f"({final.skipped} already done, {final.refused} refused by the server{failed})"
    )
    if done.kept_refused:
        console.progress(
            f"{done.kept_refused} rows refused by the server in an earlier run keep their "
            "error records"
        )
    if not done.all_predicted:
        raise click.exceptions.Exit(ROWS_FAILED_EXIT_CODE)


@click.command()
@_client_options
@click.option("--target", help="Label (or index) to explain instead of the predicted one.")
@click.option(
    "--explain-steps",
    "--steps",
    "--n-steps",
    "n_steps",
    cls=RenamedOption,
    old=["--steps", "--n-steps"],
    type=int,
    help="Integrated-gradients steps (n_steps) for these texts; default: the number the "
    "store was built with.",
)
@click.option(
    "--explain-tolerance",
    "--tolerance",
    "tolerance",
    type=float,
    help="Use the fewest steps whose |convergence delta| is at most this (1e-06 to 0.1); "
    "default: the tolerance the store was built with (build --explain-tolerance). Not with "
    "--explain-steps.",
)
@click.option(
    "--merge-subwords/--no-merge-subwords", default=None, help="Merge word pieces into words."
)
@click.option("--top", default=8, show_default=True, help="Words to show per text.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write an HTML report: each word shaded by its importance, with the "
    "probabilities of every label.",
)
@setting_options(ExplainSettings, "texts_per_request", "concurrency")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def explain(
    texts: tuple[str, ...],
    url: str,
    model: str,
    token: str | None,
    key_file: Path | None,
    timeout: float,
    as_json: bool,
    target: str | None,
    n_steps: int | None,
    tolerance: float | None,
    merge_subwords: bool | None,
    top: int,
    html_file: Path | None,
    texts_per_request: int,
    concurrency: int,
    quiet: bool,
) -> None:
    """Explain the predictions for TEXTS (Captum integrated gradients, KServe v2 explain).

    Any number of texts: they go in requests of --batch-texts, answers in input order (--json
    prints them joined into one v2 response).
    """
    from scibert_pack.api import explain_texts

    target_value: str | int | None = int(target) if target and target.isdigit() else target
    settings = ExplainSettings(
        texts_per_request=texts_per_request,
        concurrency=concurrency,
        target=target_value,
        n_steps=n_steps,
        merge_subwords=merge_subwords,
        tolerance=tolerance,
    )
    console = Console(quiet=quiet)
    requests_needed = -(-len(texts) // texts_per_request)

    def show(done: int, total: int) -> None:
        if requests_needed > 1:
            console.progress(f"explained {done}/{total} texts")

    explained = explain_texts(
        _client(url, model, token, key_file, timeout),
        list(texts),
        settings,
        with_predictions=html_file is not None,
        progress=show,
    )
    if html_file is not None:
        from scibert_pack.client.report_html import write_report

        probabilities = [p.probabilities for p in explained.predictions or ()]
        write_report(
            html_file,
            explained.explanations,
            probabilities=probabilities or None,
            model=model,
        )
        console.progress(f"wrote {html_file}")
    if as_json:
        console.json(explained.merged_response())
        return
    for e in explained.explanations:
        console.data(_flat(e.text))
        steps = "" if e.n_steps is None else f"  steps: {e.n_steps}"
        if e.converged is False:
            steps += " (tolerance not reached: the most steps allowed ran out)"
        console.data(
            f"  label: {e.label}  target: {e.target}  delta: {_number(e.delta, sign=True)}{steps}"
        )
        if e.note:
            console.data(f"  note: {e.note}")
        ranked = sorted(
            (pair for pair in zip(e.words, e.importances, strict=True) if not _special(pair[0])),
            key=lambda pair: abs(pair[1]),
            reverse=True,
        )[:top]
        console.data("  " + ", ".join(f"{w} {_number(v, sign=True)}" for w, v in ranked))


_SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})


def _special(word: str) -> bool:
    return word in _SPECIAL_TOKENS


def _flat(text: str) -> str:
    """The whole text on one line: its own line breaks would break the layout."""
    return " ".join(text.split())


def _number(value: float, *, sign: bool = False) -> str:
    """3 decimals, or 2 significant digits in scientific notation below 0.001 (never -0.000)."""
    plus = "+" if sign else ""
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        return f"{value:{plus}.1e}"
    return f"{value:{plus}.3f}"
