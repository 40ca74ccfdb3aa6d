"""`scibert-pack serve OUT`: TorchServe in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click

from scibert_pack.cli._console import Console
from scibert_pack.errors import ServeError


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8085, show_default=True, help="Inference API port (0: a free one, printed)."
)
@click.option("--management-port", default=8081, show_default=True, help="0: a free one.")
@click.option("--metrics-port", default=8082, show_default=True, help="0: a free one.")
@click.option(
    "--grpc-port",
    default=7070,
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
    port: int,
    management_port: int,
    metrics_port: int,
    grpc_port: int,
    run_dir: Path | None,
    quiet: bool,
) -> None:
    """Run TorchServe on the model store OUT (written by `scibert-pack build`)."""
    from scibert_pack.serving.server import ServeSettings, TorchServeProcess, exposure_warning

    console = Console(quiet=quiet)
    settings = ServeSettings(
        host=host,
        port=port,
        management_port=management_port,
        metrics_port=metrics_port,
        grpc_port=grpc_port,
        run_dir=run_dir,
    )
    server = TorchServeProcess(store, settings, progress=console.progress)
    warning = exposure_warning(host, token_auth=server.store.token_auth)
    if warning is not None:
        console.warn(warning)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with server:
            name = server.model_name
            console.data(f"model:       {name} (ready)")
            ports = server.settings.ports()
            console.data("ports:       " + ", ".join(f"{api} {n}" for api, n in ports.items()))
            console.data(f"v2 infer:    {server.inference_url}/v2/models/{name}/infer")
            console.data(f"v2 explain:  {server.inference_url}/v2/models/{name}/explain")
            console.data(f"v1 predict:  {server.inference_url}/v1/models/{name}:predict")
            console.data(f"native:      {server.inference_url}/predictions/{name}")
            console.data(f"management:  {server.management_url}/models/{name}")
            console.data(f"metrics:     {server.metrics_url}/metrics")
            if server.store.token_auth:
                console.data(f"key file:    {server.key_file}")
            console.progress(
                f"try: scibert-pack predict 'some text' --url {server.inference_url} --model {name}"
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
