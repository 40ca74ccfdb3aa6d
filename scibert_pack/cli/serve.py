"""`scibert-pack serve OUT`: TorchServe in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import click

from scibert_pack.cli._console import Console
from scibert_pack.cli._options import RenamedOption
from scibert_pack.config.properties import Ports
from scibert_pack.errors import ServeError


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--inference-port",
    "--port",
    "inference_port",
    cls=RenamedOption,
    old=["--port"],
    default=Ports.inference,
    show_default=True,
    help="Inference API port (KServe v1/v2 and TorchServe's own routes; 0: a free one, printed).",
)
@click.option(
    "--management-port", default=Ports.management, show_default=True, help="0: a free one."
)
@click.option("--metrics-port", default=Ports.metrics, show_default=True, help="0: a free one.")
@click.option(
    "--grpc-port",
    default=Ports.grpc_inference,
    show_default=True,
    help="gRPC inference; management is the next (0: a free pair).",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where logs and the key file go, private to you (default: a folder per inference "
    "port under $XDG_RUNTIME_DIR or $TMPDIR; clients find the key there).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def serve(
    store: Path,
    host: str,
    inference_port: int,
    management_port: int,
    metrics_port: int,
    grpc_port: int,
    run_dir: Path | None,
    quiet: bool,
) -> None:
    """Run TorchServe on the model store OUT (written by `scibert-pack build`)."""
    from scibert_pack import api
    from scibert_pack.serving.server import ServeSettings, exposure_warning

    console = Console(quiet=quiet)
    settings = ServeSettings(
        host=host,
        port=inference_port,
        management_port=management_port,
        metrics_port=metrics_port,
        grpc_port=grpc_port,
        run_dir=run_dir,
    )
    server = api.serve(store, settings, progress=console.progress)
    warning = exposure_warning(host, token_auth=server.store.token_auth)
    if warning is not None:
        console.warn(warning)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with server:
            key_file = server.key_file if server.store.token_auth else None
            for line in url_lines(
                server.model_name,
                server.inference_url,
                server.management_url,
                server.metrics_url,
                key_file=key_file,
                ports=server.settings.ports(),
            ):
                console.data(line)
            console.progress(
                f"try: scibert-pack predict 'some text' --url {server.inference_url} "
                f"--model-name {server.model_name}"
            )
            console.progress("press Ctrl-C to stop")
            code = server.wait()
            raise ServeError(
                f"TorchServe stopped by itself (exit code {code}):\n{server.log_tail()}",
                fix=f"read the logs in {server.log_dir}",
            )
    except KeyboardInterrupt:
        console.progress("stopping TorchServe")
    finally:
        signal.signal(signal.SIGTERM, previous)


def url_lines(
    name: str,
    api: str,
    management: str,
    metrics: str,
    *,
    key_file: Path | None,
    ports: Mapping[str, int] | None = None,
) -> list[str]:
    """What `serve` prints once the model is ready: every route the README lists."""
    model = f"/models/{name}"
    rows = [
        ("model", f"{name} (ready)"),
        ("v2 infer", f"{api}/v2{model}/infer"),
        ("v2 explain", f"{api}/v2{model}/explain"),
        ("v1 predict", f"{api}/v1{model}:predict"),
        ("v1 explain", f"{api}/v1{model}:explain"),
        ("native predict", f"{api}/predictions/{name}"),
        ("native explain", f"{api}/explanations/{name}"),
        ("management", f"{management}{model}"),
        ("metrics", f"{metrics}/metrics"),
    ]
    if ports is not None:
        # Every port in use: with port 0 these are the free ones serve picked.
        rows.append(("ports", ", ".join(f"{api_name} {n}" for api_name, n in ports.items())))
    if key_file is not None:
        rows.append(("key file", str(key_file)))
    width = max(len(label) for label, _ in rows) + 2
    return [f"{label + ':':<{width}}{value}" for label, value in rows]
