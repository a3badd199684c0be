"""URL forms and client options (no transparent retries; timeouts) of storage.connection."""

from __future__ import annotations

import asyncio
import re

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from redsession import ConfigError, SessionManager, StorageUnavailable
from redsession.config import Settings
from redsession.storage.connection import (
    _NodeConnection,
    _ReplaceClosed,
    async_client,
    parse_url,
    sync_client,
)
from tests.topology import free_ports

S = Settings()


@pytest.mark.parametrize(
    ("url", "kind", "tls", "nodes", "service", "db"),
    [
        ("redis://h:1/2", "single", False, (), "", 0),
        ("rediss://h:1/0", "single", True, (), "", 0),
        ("unix:///run/redis.sock?db=1", "single", False, (), "", 0),
        ("redis+sentinel://h1:26379,h2:26380/mymaster/3", "sentinel", False,
         (("h1", 26379), ("h2", 26380)), "mymaster", 3),
        ("redis+sentinel://h1,h2/svc", "sentinel", False, (("h1", 26379), ("h2", 26379)), "svc", 0),
        ("rediss+sentinel://[::1]:5000/svc/", "sentinel", True, (("::1", 5000),), "svc", 0),
        ("redis+cluster://a:7000,b:7001", "cluster", False, (("a", 7000), ("b", 7001)), "", 0),
        ("rediss+cluster://a", "cluster", True, (("a", 6379),), "", 0),
        ("redis+cluster://a:7000/", "cluster", False, (("a", 7000),), "", 0),
    ],
)  # fmt: skip
def test_parse_url(
    url: str, kind: str, tls: bool, nodes: tuple[tuple[str, int], ...], service: str, db: int
) -> None:
    t = parse_url(url, S)
    assert (t.kind, t.tls, t.nodes, t.service, t.db) == (kind, tls, nodes, service, db)


def test_credentials_are_unquoted() -> None:
    t = parse_url("redis+sentinel://us%3Aer:p%40ss@h:1/svc", S)
    assert (t.username, t.password, t.nodes) == ("us:er", "p@ss", (("h", 1),))
    t = parse_url("redis+cluster://:secret@h:1", S)
    assert (t.username, t.password) == (None, "secret")


def test_url_falls_back_to_settings() -> None:
    assert parse_url(None, Settings(redis_url="redis+cluster://h:1")).kind == "cluster"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "no Redis URL"),
        ("http://h:1", "unsupported Redis URL"),
        ("h:6379", "unsupported Redis URL"),
        ("redis+sentinel://h:1", "expected redis+sentinel://"),
        ("redis+sentinel://h:1/svc/0/extra", "expected redis+sentinel://"),
        ("redis+sentinel://h:1/svc/zero", "database 'zero' is not a number"),
        ("redis+sentinel://h:port/svc", "port 'port' is not a number"),
        ("redis+sentinel://h:70000/svc", "out of range"),
        ("redis+sentinel://h:1,,h2:2/svc", "empty host"),
        ("redis+cluster://h:1/1", "a cluster has only database 0"),
        ("redis+cluster://h:1?ssl=1", "query options are not supported"),
        ("redis://h:notaport/0", "bad Redis URL"),
    ],
)
def test_bad_urls_are_config_errors(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        sync_client(url, S)
    with pytest.raises(ConfigError, match=re.escape(says)):
        async_client(url, S)


def _no_retries(pool_kwargs: dict[str, object], *, asyncio: bool = False) -> bool:
    # Each client gets the Retry of its own I/O model: redis-py 8.2 warns when an asyncio
    # client is given a sync one (and converts it).
    retry = pool_kwargs["retry"]
    assert type(retry) is (redis.asyncio.retry.Retry if asyncio else redis.retry.Retry)
    return retry.get_retries() == 0


def test_single_server_client_options() -> None:
    s = Settings(socket_timeout=1.5, connect_timeout=0.5)
    c = sync_client("redis://127.0.0.1:1/0", s)
    kw = c.connection_pool.connection_kwargs
    assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (1.5, 0.5)
    assert _no_retries(kw)
    c.close()
    a = async_client("redis://127.0.0.1:1/0", s)
    assert _no_retries(a.connection_pool.connection_kwargs, asyncio=True)


def test_rediss_uses_tls_and_verifies() -> None:
    c = sync_client("rediss://127.0.0.1:1/0", S)
    assert issubclass(c.connection_pool.connection_class, redis.SSLConnection)
    assert c.connection_pool.connection_kwargs.get("ssl_cert_reqs", "required") == "required"
    c.close()


def test_sentinel_clients_ask_the_sentinels() -> None:
    url = "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/2"
    c = sync_client(url, Settings(socket_timeout=1.5))
    pool = c.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2
    assert _no_retries(pool.connection_kwargs)
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 1.5
    c.close()
    a = async_client(url, S)
    assert isinstance(a.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert _no_retries(a.connection_pool.connection_kwargs, asyncio=True)


def test_rediss_sentinel_uses_tls() -> None:
    c = sync_client("rediss+sentinel://127.0.0.1:1/svc", S)
    ssl = redis.sentinel.SentinelManagedSSLConnection
    assert issubclass(c.connection_pool.connection_class, ssl)
    c.close()


def test_unreachable_cluster_is_storage_unavailable() -> None:
    (port,) = free_ports(1)
    with pytest.raises(StorageUnavailable, match="unavailable"):
        sync_client(f"redis+cluster://127.0.0.1:{port}", Settings(connect_timeout=0.5))


def test_unreachable_sentinels_are_storage_unavailable() -> None:
    (port,) = free_ports(1)
    m = SessionManager.from_url(
        f"redis+sentinel://127.0.0.1:{port}/svc", connect_timeout=0.5, retry_deadline=0.3
    )
    with pytest.raises(StorageUnavailable):
        m.create_session("alice")
    m.close()


def test_unix_socket(server_factory: object) -> None:
    from tests.conftest import ServerFactory

    assert callable(server_factory)
    factory: ServerFactory = server_factory
    server = factory(extra_args=("--unixsocket", "redis.sock", "--unixsocketperm", "700"))
    sock = server.data_dir / "redis.sock"
    with SessionManager.from_url(f"unix://{sock}?db=0") as m:
        sid = m.create_session("alice").session_id
        assert m.get_session(sid).user_id == "alice"


# -- asyncio: a checkout replaces a connection the server has closed ------------------------


async def test_async_checkout_replaces_connections_the_server_closed(redis_url: str) -> None:
    c = async_client(redis_url, S)
    try:
        assert await asyncio.gather(*(c.ping() for _ in range(4))) == [True] * 4
        with redis.Redis.from_url(redis_url) as admin:  # sync: the loop reads nothing meanwhile
            assert admin.client_kill_filter(_type="normal", skipme=True) == 4
        assert await c.ping()  # the pool's most recent connection
        assert await asyncio.gather(*(c.ping() for _ in range(4))) == [True] * 4  # and the rest
    finally:
        await c.aclose()


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///nowhere.sock?db=0",
     "redis+sentinel://127.0.0.1:1/svc", "rediss+sentinel://127.0.0.1:1/svc"],
)  # fmt: skip
async def test_every_async_pool_checks_connections_on_checkout(url: str) -> None:
    c = async_client(url, S)
    assert isinstance(c, redis.asyncio.Redis)
    assert isinstance(c.connection_pool, _ReplaceClosed)
    await c.aclose()


@pytest.mark.parametrize("scheme", ["redis+cluster", "rediss+cluster"])
async def test_async_cluster_nodes_check_connections_on_checkout(scheme: str) -> None:
    c = async_client(f"{scheme}://127.0.0.1:1", S)
    assert isinstance(c, redis.asyncio.RedisCluster)
    nodes = c.nodes_manager
    # Nodes found later are built from connection_kwargs; the startup nodes already exist.
    classes = [nodes.connection_kwargs["connection_class"]]
    classes += [n.connection_class for n in nodes.startup_nodes.values()]
    for cls in classes:
        assert issubclass(cls, _NodeConnection)
        assert issubclass(cls, redis.asyncio.SSLConnection) == scheme.startswith("rediss")
    await c.aclose()
