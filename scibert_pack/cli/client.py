"""`scibert-pack predict` and `scibert-pack explain`: v2 requests to a running server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from scibert_pack.cli._console import Console


def _client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("texts", nargs=-1, required=True),
        click.option("--url", default="http://127.0.0.1:8085", show_default=True),
        click.option("--model", required=True, help="Model name (the URL key)."),
        click.option(
            "--token",
            envvar="SCIBERT_PACK_TOKEN",
            help="Bearer token (archives built with --token-auth).",
        ),
        click.option(
            "--key-file",
            type=click.Path(path_type=Path, dir_okay=False),
            help="key_file.json written by TorchServe (default: the one `serve` wrote).",
        ),
        click.option("--timeout", default=300.0, show_default=True, help="Seconds."),
        click.option("--json", "as_json", is_flag=True, help="Print the raw v2 response."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _client(url: str, model: str, token: str | None, key_file: Path | None, timeout: float) -> Any:
    from scibert_pack.serving.client import InferenceClient, find_token

    return InferenceClient(
        url, model, token=find_token(url, token=token, key_file=key_file), timeout_s=timeout
    )


@click.command()
@_client_options
def predict(
    texts: tuple[str, ...],
    url: str,
    model: str,
    token: str | None,
    key_file: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Classify TEXTS with a served model (KServe v2 infer)."""
    predictions, raw = _client(url, model, token, key_file, timeout).infer(list(texts))
    console = Console()
    if as_json:
        console.json(raw)
        return
    width = max(len("LABEL"), *(len(p.label) for p in predictions))
    console.data(f"{'LABEL':<{width}}  {'P':>6}  TEXT")
    for p in predictions:
        flag = " (truncated)" if p.truncated else ""
        console.data(
            f"{p.label:<{width}}  {p.probabilities[p.label]:>6.3f}  {_short(p.text)}{flag}"
        )


@click.command()
@_client_options
@click.option("--target", help="Label (or index) to explain instead of the predicted one.")
@click.option("--steps", "n_steps", type=int, help="Integrated-gradients steps.")
@click.option(
    "--merge-subwords/--no-merge-subwords", default=None, help="Merge word pieces into words."
)
@click.option("--top", default=8, show_default=True, help="Words to show per text.")
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
    merge_subwords: bool | None,
    top: int,
) -> None:
    """Explain the predictions for TEXTS (Captum integrated gradients, KServe v2 explain)."""
    target_value: str | int | None = int(target) if target and target.isdigit() else target
    explanations, raw = _client(url, model, token, key_file, timeout).explain(
        list(texts), target=target_value, n_steps=n_steps, merge_subwords=merge_subwords
    )
    console = Console()
    if as_json:
        console.json(raw)
        return
    for e in explanations:
        console.data(_short(e.text, 100))
        console.data(f"  label: {e.label}  target: {e.target}  delta: {e.delta:+.4f}")
        ranked = sorted(
            (pair for pair in zip(e.words, e.importances, strict=True) if not _special(pair[0])),
            key=lambda pair: abs(pair[1]),
            reverse=True,
        )[:top]
        console.data("  " + ", ".join(f"{w} {v:+.3f}" for w, v in ranked))


_SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})


def _special(word: str) -> bool:
    return word in _SPECIAL_TOKENS


def _short(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
