"""``inferline stream``: score messages from Redis Streams as they arrive.

``inferline stream MODEL --source … --sink …`` runs a consumer until SIGTERM or
SIGINT, then stops reading, scores and acknowledges what is in flight, and
exits 0. ``inferline stream status`` reports lag, pending entries, consumers,
results per second and dead letters.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

__all__ = ["app"]


class _ModelFirst(TyperGroup):
    """``stream MODEL …`` runs a consumer; ``stream status …`` is the one subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_ModelFirst,
    help="Score messages from a stream as they arrive (inferline stream MODEL --source …).",
    no_args_is_help=True,
)

Source = Annotated[
    str | None,
    typer.Option(
        help="redis://host:port/db?stream=NAME, nats://host:port/SUBJECT or "
        "kafka://host:port/TOPIC to read messages from."
    ),
]
Sink = Annotated[
    str | None, typer.Option(help="Where results go: the same URL forms, on the same broker.")
]
Group = Annotated[str | None, typer.Option(help="Consumer group (default: inferline).")]
DeadLetterOpt = Annotated[
    str | None, typer.Option(help="Dead-letter stream (default: <source stream>-dead).")
]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML settings file (flags and env win).")]


@app.command("run", hidden=True)
def run_command(
    model: Annotated[str, typer.Argument(help="Model name.")],
    source: Source = None,
    sink: Sink = None,
    group: Group = None,
    consumer: Annotated[
        str | None, typer.Option(help="This consumer's name (default: <host>-<pid>).")
    ] = None,
    results_key: Annotated[
        str | None, typer.Option(help="Also write each result to this Redis key ('score:{id}').")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Expiry of result keys (90s, 30m, 1h).")] = None,
    dead_letter: DeadLetterOpt = None,
    max_deliveries: Annotated[
        int | None, typer.Option(help="Deliveries before a message goes to the dead letter.")
    ] = None,
    id_field: Annotated[str | None, typer.Option(help="Field carrying the message id.")] = None,
    payload_field: Annotated[
        str | None, typer.Option(help="Field holding a JSON object or V2 request.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Most messages per model call.")] = None,
    linger_ms: Annotated[
        float | None, typer.Option(help="How long a batch waits to fill (ms).")
    ] = None,
    claim_idle_ms: Annotated[
        int | None, typer.Option(help="Claim a dead consumer's entries idle this long (ms).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Model version or alias.")] = None,
    enrich: Annotated[
        str | None,
        typer.Option(help="Call these servers instead of loading the model (comma-separated)."),
    ] = None,
    enrich_token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token for the --enrich servers (or INFERLINE_STREAM__ENRICH_TOKEN)."
        ),
    ] = None,
    enrich_timeout: Annotated[
        float | None, typer.Option(help="Seconds per message call, retries included.")
    ] = None,
    enrich_retries: Annotated[
        int | None, typer.Option(help="Retries on 503/UNAVAILABLE or an unreachable server.")
    ] = None,
    enrich_balance: Annotated[
        str | None, typer.Option(help="round_robin or least_outstanding (default).")
    ] = None,
    enrich_tls_ca: Annotated[
        Path | None, typer.Option(help="CA bundle for https:// and grpcs:// servers.")
    ] = None,
    enrich_tls_cert: Annotated[
        Path | None, typer.Option(help="Client certificate (mutual TLS).")
    ] = None,
    enrich_tls_key: Annotated[Path | None, typer.Option(help="Client key (mutual TLS).")] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Folder of models (default: the registry).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Consume SOURCE, score each message with MODEL, write results to SINK."""
    flags = {
        "source": source,
        "sink": sink,
        "group": group,
        "consumer": consumer,
        "results_key": results_key,
        "ttl_seconds": ttl,
        "dead_letter": dead_letter,
        "max_deliveries": max_deliveries,
        "id_field": id_field,
        "payload_field": payload_field,
        "batch_size": batch_size,
        "linger_ms": linger_ms,
        "claim_idle_ms": claim_idle_ms,
        "metrics_port": metrics_port,
        "version": version,
        "enrich": [e.strip() for e in enrich.split(",") if e.strip()] if enrich else None,
        "enrich_token": enrich_token,
        "enrich_timeout": enrich_timeout,
        "enrich_retries": enrich_retries,
        "enrich_balance": enrich_balance,
        "enrich_tls_ca": enrich_tls_ca,
        "enrich_tls_cert": enrich_tls_cert,
        "enrich_tls_key": enrich_tls_key,
    }
    settings = _settings(config, flags, model_dir=model_dir, log_level=log_level)
    from inferline.monitoring.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_consume(settings, model))
    except (ValueError, OSError) as exc:
        typer.echo(f"inferline: {exc}", err=True)
        raise typer.Exit(2) from exc
    except Exception as exc:
        from inferline.errors import InferlineError

        if isinstance(exc, InferlineError):
            typer.echo(f"inferline: {exc.message}", err=True)
            raise typer.Exit(2) from exc
        raise


async def _consume(settings: Any, model: str) -> None:
    from inferline.streaming import run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, model, stop)


@app.command("status")
def status(
    source: Source = None,
    sink: Sink = None,
    group: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    dead_letter: DeadLetterOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Lag, pending entries, consumers, results per second and dead letters."""
    settings = _settings(config, {"source": source, "sink": sink, "dead_letter": dead_letter})
    stream = settings.stream
    if not stream.source:
        typer.echo("inferline: status needs --source", err=True)
        raise typer.Exit(2)
    try:
        report = _status(stream, group)
    except (ValueError, OSError) as exc:
        typer.echo(f"inferline: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print(report)


def _status(stream: Any, group: str | None) -> dict[str, Any]:
    """The report for the broker the source URL names (Redis, NATS JetStream or Kafka)."""
    scheme = stream.source.partition("://")[0]
    if scheme in ("nats", "tls"):
        from inferline.streaming.nats import nats_status, parse_nats_url

        server, subject = parse_nats_url(stream.source)
        dead = stream.dead_letter or f"{subject}-dead"
        return asyncio.run(nats_status(server, subject, group, dead))
    if scheme == "kafka":
        from inferline.streaming.kafka import kafka_status, parse_kafka_url

        bootstrap, topic = parse_kafka_url(stream.source)
        dead = stream.dead_letter or f"{topic}-dead"
        return kafka_status(bootstrap, topic, group or stream.group, dead, stream.kafka_options)
    from inferline.streaming.redis import parse_stream_url, redis_status

    url = parse_stream_url(stream.source)
    sink_name = parse_stream_url(stream.sink).stream if stream.sink else None
    return asyncio.run(
        redis_status(url, group, sink_name, stream.dead_letter or f"{url.stream}-dead")
    )


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"stream [bold]{report['stream']}[/]: {report['length']} entries, "
        f"{report['dead_letters']} dead letters"
        + (
            f", {report['results_per_second']} results/s (last minute)"
            if "results_per_second" in report
            else ""
        )
    )
    table = Table("group", "lag", "pending", "consumers (pending, idle ms)")
    for info in report["groups"]:
        consumers = ", ".join(
            f"{c['name']} ({c['pending']}, {c['idle_ms']})" for c in info["consumers"]
        )
        lag, pending = info["lag"], info["pending"]
        table.add_row(
            info["name"],
            "-" if lag is None else str(lag),
            "-" if pending is None else str(pending),
            consumers,
        )
    console.print(table)


def _settings(config: Path | None, flags: dict[str, Any], **top: Any) -> Any:
    from pydantic import ValidationError

    from inferline.settings import Settings, StreamSettings

    try:
        settings = Settings.load(config, **top)
        merged = {**settings.stream.model_dump(exclude_unset=True)}
        merged.update({k: v for k, v in flags.items() if v is not None})
        return settings.model_copy(update={"stream": StreamSettings.model_validate(merged)})
    except (ValidationError, ValueError) as exc:
        typer.echo(f"inferline: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
