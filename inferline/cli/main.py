"""Root command: builds Settings once from flags, environment and file."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from inferline._version import __version__
from inferline.cli.batch import batch as batch_command
from inferline.cli.keys import app as keys_app
from inferline.cli.models import app as models_app
from inferline.cli.monitor import app as monitor_app
from inferline.cli.optimize import optimize as optimize_command
from inferline.cli.stream import app as stream_app
from inferline.errors import SettingsError
from inferline.settings import setting_label

app = typer.Typer(
    name="inferline",
    help="Serve trained models online: Open Inference Protocol over REST and gRPC.",
    no_args_is_help=True,
    add_completion=False,
)

ModelDir = Annotated[Path | None, typer.Option(help="Folder of models to serve.")]
Host = Annotated[str | None, typer.Option(help="Address to listen on.")]
HttpPort = Annotated[int | None, typer.Option(help="REST port.")]
GrpcPort = Annotated[int | None, typer.Option(help="gRPC port.")]
GrpcEngine = Annotated[
    str | None,
    typer.Option(help="What serves gRPC: native (in the event loop) or grpcio (grpc.aio)."),
]
Workers = Annotated[int | None, typer.Option(help="Server processes sharing the ports.")]
Config = Annotated[Path | None, typer.Option(help="YAML settings file (flags and env win).")]
LogLevel = Annotated[str | None, typer.Option(help="debug, info, warning or error.")]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure", help="Serve without authentication on an address other than loopback."
    ),
]
AllowCodeUpload = Annotated[
    bool,
    typer.Option(
        "--allow-code-upload",
        help="Accept Python code and pinned pickles uploaded over HTTP (admin role only).",
    ),
]
TlsCert = Annotated[
    Path | None,
    typer.Option(help="PEM certificate: serve HTTPS and gRPC over TLS (SIGHUP reloads)."),
]
TlsKey = Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")]
TlsClientCa = Annotated[
    Path | None, typer.Option(help="PEM CA bundle: require client certificates it signed.")
]


def _settings(config: Path | None, **flags: Any) -> Any:
    from pydantic import ValidationError

    from inferline.settings import Settings, settings_error

    try:
        return Settings.load(config, **flags)
    except ValidationError as exc:
        _refuse(settings_error(exc))
    except ValueError as exc:  # the settings file: unreadable, or not a mapping
        _refuse(f"invalid settings: {exc}")


def _refuse(*problems: str) -> NoReturn:
    """One line on stderr, exit code 2: what a startup refusal looks like, whatever refused."""
    typer.echo(f"inferline: {' '.join('; '.join(problems).split())}", err=True)
    raise typer.Exit(2)


def _serve(settings: Any) -> None:
    from inferline import server

    if settings.model_dir is not None and not settings.model_dir.is_dir():
        _refuse(f"model folder {settings.model_dir} does not exist")
    try:
        server.preflight(settings)  # no open server beyond loopback by accident
    except SettingsError as exc:
        _refuse(f"{setting_label(exc.setting.split('.'))}: {exc.detail}")
    except ValueError as exc:
        _refuse(str(exc))
    try:
        if settings.workers == 1:
            server.run(settings)
            return
        workers = server.start_workers(settings)
    except SettingsError as exc:
        _refuse(f"{setting_label(exc.setting.split('.'))}: {exc.detail}")

    def forward(signum: int, _: Any) -> None:
        for process in workers:
            if process.is_alive():
                process.terminate()

    def reload(signum: int, _: Any) -> None:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)  # each reloads its TLS files

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload)
    for process in workers:
        process.join()
    if any(process.exitcode == 2 for process in workers):
        raise typer.Exit(2)  # a worker refused a setting, and said which on stderr


@app.command()
def serve(
    model_dir: ModelDir = None,
    host: Host = None,
    http_port: HttpPort = None,
    grpc_port: GrpcPort = None,
    grpc_engine: GrpcEngine = None,
    workers: Workers = None,
    log_level: LogLevel = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
    config: Config = None,
    insecure: Insecure = False,
    allow_code_upload: AllowCodeUpload = False,
) -> None:
    """Serve every model found in a model folder over REST and gRPC."""
    settings = _settings(
        config,
        model_dir=model_dir,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        grpc_engine=grpc_engine,
        workers=workers,
        log_level=log_level,
        insecure=insecure or None,
        allow_code_upload=allow_code_upload or None,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
    )
    _serve(settings)


@app.command()
def demo(
    model_dir: Annotated[Path, typer.Option(help="Where to write the demo model.")] = Path(
        "demo-models"
    ),
    http_port: HttpPort = None,
    grpc_port: GrpcPort = None,
    serve_it: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after training.")
    ] = True,
) -> None:
    """Train a small random forest on the spot, export it to ONNX and serve it."""
    from inferline.cli.demo import print_usage, write_demo_model

    path = write_demo_model(model_dir)
    typer.echo(f"demo model written to {path}")
    settings = _settings(None, model_dir=model_dir, http_port=http_port, grpc_port=grpc_port)
    if serve_it:
        print_usage(settings)
        _serve(settings)


app.add_typer(models_app, name="models")
app.add_typer(monitor_app, name="monitor")
app.add_typer(keys_app, name="keys")
app.add_typer(stream_app, name="stream")
app.command(name="batch")(batch_command)
app.command(name="optimize")(optimize_command)


@app.command()
def version() -> None:
    """Print the inferline version."""
    typer.echo(__version__)


def main() -> None:
    app()
