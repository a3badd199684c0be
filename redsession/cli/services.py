"""Long-running services (server, worker, mcp, up) and version."""

from __future__ import annotations

import platform
import signal
import threading
from types import FrameType
from typing import Literal

import click

from redsession import __version__
from redsession.cli.errors import CliError
from redsession.cli.output import print_json
from redsession.cli.state import get_state, json_option
from redsession.errors import StorageError

Port = click.IntRange(0, 65535)


@click.command()
@json_option
@click.option(
    "--port", type=Port, help="Listen here [default: a free port; env REDSESSION_SERVER_PORT]."
)
def server(port: int | None) -> None:
    """Run the embedded Redis server on DATA_DIR/redis until SIGTERM or Ctrl-C."""
    from redsession.services.embedded import RedisServer

    state = get_state()
    settings = state.settings(server_port=port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Without a handler SIGTERM kills Python at once and the finally below never runs.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    instance = RedisServer(
        settings.data_dir / "redis",
        port=settings.server_port,
        binary=settings.server_bin,
        appendfsync=settings.appendfsync,
    )
    try:
        instance.start()
        if state.json:
            print_json({"url": instance.url, "pid": instance.pid,
                        "data_dir": str(instance.data_dir)})  # fmt: skip
        else:
            click.echo(instance.url)
        while not stop.wait(0.5):
            if not instance.running:
                raise CliError(
                    f"the server exited by itself; see {instance.data_dir / 'server.log'}"
                )
    finally:
        instance.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@json_option
@click.option("--check", is_flag=True, help="Exit 0 if a worker is alive, 1 if not.")
@click.option("--no-restore", is_flag=True,
              help="Do not load the dump files on first leading (they were just restored).")
@click.pass_context
def worker(ctx: click.Context, check: bool, no_restore: bool) -> None:
    """Run the maintenance worker (cleanup, dumps, backups) until SIGTERM."""
    state = get_state()
    settings = state.settings()
    if check:
        from redsession.services.worker import check_worker

        try:
            alive = check_worker(settings)
        except StorageError as e:
            # Health checks understand 0 and 1 only: no Redis means no healthy worker.
            click.echo(f"no worker: {e}", err=True)
            ctx.exit(1)
        if state.json:
            print_json({"alive": alive})
        else:
            click.echo("a worker is alive" if alive else "no live worker")
        ctx.exit(0 if alive else 1)
    from redsession.services.worker import run_worker

    ctx.exit(run_worker(settings, restore=not no_restore))


@click.command()
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio",
              show_default=True)  # fmt: skip
@click.option("--host", help="With --transport http [default: REDSESSION_MCP_HOST, 127.0.0.1].")
@click.option("--port", type=Port, help="With --transport http [default: REDSESSION_MCP_PORT].")
def mcp(transport: Literal["stdio", "http"], host: str | None, port: int | None) -> None:
    """Serve the session tools to a model over MCP (stdio or streamable HTTP)."""
    from redsession.services.mcp_server import run_mcp

    if transport == "stdio" and (host is not None or port is not None):
        raise click.UsageError("--host and --port go with --transport http")
    settings = get_state().settings()
    if transport == "stdio":
        run_mcp(settings, transport)
        return
    # uvicorn stops gracefully on SIGTERM, then raises it again for the handler it found:
    # this one, so that a requested stop exits 0 like the other services.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        run_mcp(settings, transport, host, port)
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command()
@click.option("--host", help="Listen here [default: REDSESSION_API_HOST, 127.0.0.1].")
@click.option("--port", type=Port, help="Listen here [default: REDSESSION_API_PORT, 8780].")
def api(host: str | None, port: int | None) -> None:
    """Serve the REST API, /metrics and the dashboard (/ui) over HTTP."""
    from redsession.services.api import run_api

    previous = signal.signal(signal.SIGTERM, _exit_cleanly)  # as for mcp: a stop exits 0
    try:
        run_api(get_state().settings(), host, port)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@click.command()
@click.option("--mcp-port", type=Port, help="Serve MCP over HTTP on this port too.")
@click.option("--api-port", type=Port, help="Serve the REST API and dashboard on this port.")
@click.pass_context
def up(ctx: click.Context, mcp_port: int | None, api_port: int | None) -> None:
    """Everything in one: the embedded server (unless --redis-url), the worker, MCP and
    the REST API with its dashboard."""
    from redsession.services.up import run_up

    ctx.exit(run_up(get_state().settings(), mcp_port=mcp_port, api_port=api_port))


@click.command()
@json_option
def version() -> None:
    """Print the version of redsession."""
    import redis

    info = {"redsession": __version__, "python": platform.python_version(),
            "redis_py": redis.__version__}  # fmt: skip
    if get_state().json:
        print_json(info)
    else:
        click.echo(
            f"redsession {__version__} (python {info['python']}, redis-py {info['redis_py']})"
        )
