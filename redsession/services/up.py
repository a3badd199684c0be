"""`redsession up`: the embedded server (unless REDSESSION_REDIS_URL is set), the worker, the
MCP server over streamable HTTP and the REST API, started together and stopped together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from redsession.config import Settings
from redsession.errors import RedsessionError
from redsession.manager import SessionManager
from redsession.services.embedded import RedisServer
from redsession.storage.connection import sync_client

log = logging.getLogger(__name__)
STOP_TIMEOUT = 30.0  # the worker finishes the job in hand before it exits


class _Stop(Exception):
    pass


def _child(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C in the terminal reaches only us, and we send each child
    # exactly one SIGTERM (a second one would make the worker drop the job in hand).
    return subprocess.Popen(
        [sys.executable, "-m", "redsession", *args], env=env, start_new_session=True
    )


def _stop_child(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s; killing it", name, STOP_TIMEOUT)
        proc.kill()
        proc.wait()


def _manager(settings: Settings) -> SessionManager:
    return SessionManager(sync_client(settings.redis_url, settings), settings)


def _restore(settings: Settings) -> None:
    with _manager(settings) as m:
        report = m.restore_sessions()
    print(f"restore {report}", flush=True)


def _final_dump(settings: Settings) -> None:
    with _manager(settings) as m:
        report = m.dump_sessions()
    print(f"dump    {report}", flush=True)


def run_up(
    settings: Settings, *, mcp_port: int | None = None, api_port: int | None = None
) -> int:
    """Run everything until SIGINT/SIGTERM; returns the exit code."""
    data_dir = Path(settings.data_dir).resolve()
    server: RedisServer | None = None
    children: dict[str, subprocess.Popen[bytes]] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        url = settings.redis_url
        if url is None:
            server = RedisServer(
                data_dir / "redis", port=settings.server_port, binary=settings.server_bin,
                appendfsync=settings.appendfsync,
            )  # fmt: skip
            server.start()
            url = server.url
            print(f"redis   {url}  (embedded; data in {data_dir / 'redis'})", flush=True)
        else:
            print(f"redis   {url}  (REDSESSION_REDIS_URL; no server started)", flush=True)
        settings = settings.model_copy(update={"redis_url": url, "data_dir": data_dir})
        _restore(settings)
        port = settings.mcp_port if mcp_port is None else mcp_port
        env = {
            **os.environ,
            "REDSESSION_REDIS_URL": url,
            "REDSESSION_DATA_DIR": str(data_dir),
            "REDSESSION_MCP_PORT": str(port),
        }
        # Restored just above: the worker must not load the same files a second time.
        children["worker"] = _child(["worker", "--no-restore"], env)
        print(f"worker  pid {children['worker'].pid} (cleanup, dumps to {data_dir}, SQL mirror)",
              flush=True)  # fmt: skip
        children["mcp"] = _child(["mcp", "--transport", "http", "--port", str(port)], env)
        endpoint = f"http://{settings.mcp_host}:{port}/mcp"
        print(f"mcp     {endpoint}  (streamable HTTP)", flush=True)
        print(
            f'        point an MCP client at it: {{"mcpServers": {{"redsession": '
            f'{{"url": "{endpoint}"}}}}}}',
            flush=True,
        )
        api = settings.api_port if api_port is None else api_port
        children["api"] = _child(["api", "--port", str(api)], env)
        print(f"api     http://{settings.api_host}:{api}/v1  (REST; dashboard at /ui, "
              f"metrics at /metrics)", flush=True)  # fmt: skip
        print("Ctrl-C stops everything.", flush=True)
        while True:
            for name, proc in children.items():
                if proc.poll() is not None:
                    log.error("%s exited with code %s; stopping everything", name, proc.returncode)
                    code = 1
                    raise _Stop
            time.sleep(0.5)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name in ("api", "mcp", "worker"):
            if name in children:
                _stop_child(name, children[name])
        if settings.redis_url is not None and (server is None or server.running):
            try:
                _final_dump(settings)
            except (RedsessionError, OSError) as e:  # shutting down: report, go on stopping
                log.error("final dump failed (%s); Redis' own AOF still has the data", e)
        if server is not None:
            server.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
        print("stopped.", flush=True)
    return code

