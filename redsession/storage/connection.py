"""Building redis-py clients from a URL and Settings.

URL forms (``rediss`` instead of ``redis`` means TLS in every form):

- ``redis://[user:pass@]host:port/db`` and ``rediss://...``: one server.
- ``unix:///path/to/redis.sock?db=0``: one server on a Unix socket.
- ``redis+sentinel://[user:pass@]h1:26379,h2:26379/service[/db]``: the master Sentinel names
  for ``service``; the credentials are the master's, the sentinels are asked without them.
- ``redis+cluster://[user:pass@]h1:7000[,h2:7001...]``: a Redis Cluster, discovered from
  these startup nodes.
"""

from __future__ import annotations

import select
import socket
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from redsession.config import Settings
from redsession.errors import ConfigError, StorageUnavailable
from redsession.storage.packing import packing

SCHEMES = (
    "redis://", "rediss://", "unix://",
    "redis+sentinel://", "rediss+sentinel://", "redis+cluster://", "rediss+cluster://",
)  # fmt: skip
SENTINEL_PORT = 26379
REDIS_PORT = 6379

SyncClient = redis.Redis | redis.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster


def _options(settings: Settings, retry: Any) -> dict[str, Any]:
    # No retries inside redis-py (``retry`` is the flavour's Retry class: an asyncio client
    # given a sync one warns, from redis-py 8.2): the drivers retry whole commands, within
    # the deadline of Settings.retry_deadline, and the scripts' operation ids make that safe
    # (drivers.py).
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry(NoBackoff(), 0),
        "decode_responses": False,
    }


def _pool(settings: Settings) -> dict[str, Any]:
    # A caller beyond max_connections waits for a free connection (up to the socket
    # timeout) instead of failing at once with "Too many connections".
    return {"max_connections": settings.max_connections, "timeout": settings.socket_timeout}


def check_tls_files(settings: Settings) -> None:
    """Raises ConfigError unless each TLS file given is a file (at start-up, not on first
    use: a typo should fail before the first request), and a certificate has its key."""
    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        raise ConfigError("a client certificate needs both tls_certfile and tls_keyfile")
    for name in ("tls_ca_certs", "tls_certfile", "tls_keyfile"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}: {str(path)!r} is not a file")


def _tls_options(settings: Settings) -> dict[str, Any]:
    """Client TLS options for rediss:// forms: always verify the server's certificate."""
    check_tls_files(settings)
    paths = {
        "ssl_ca_certs": settings.tls_ca_certs,
        "ssl_certfile": settings.tls_certfile,
        "ssl_keyfile": settings.tls_keyfile,
    }
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": settings.tls_check_hostname,
        **{name: str(path) for name, path in paths.items() if path is not None},
    }


# -- asyncio: a checkout replaces a connection the server has closed -------------------------
#
# redis-py's sync pools do (their can_read() raises on EOF). Its asyncio pool (8.1) does not
# when maintenance notifications are on, and they are by default with RESP3: its checkout
# then ignores a stream at EOF, so after a Redis restart the first command on each pooled
# connection failed (redis-py issue 4252). Its cluster nodes check nothing at checkout. Even
# the EOF check sees only what the event loop has read. The check below asks the kernel: one
# non-blocking poll, no round trip, nothing sent, so no command can run twice.

_POLL = getattr(select, "poll", None)  # not on Windows: there only the loop's view counts
_RDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer has closed (its FIN arrived)
_GONE = (select.POLLHUP | select.POLLERR | select.POLLNVAL | _RDHUP) if _POLL else 0


def _closed_by_server(conn: AbstractConnection) -> bool:
    """Whether the server has closed this idle connection (FIN or reset received).

    Right after a restart a caller may reach the pool before the loop has run at all.
    """
    reader, writer = conn._reader, conn._writer
    if reader is None or writer is None:
        return False  # not connected: the checkout connects it
    if writer.transport.is_closing() or reader.at_eof():
        return True
    sock = writer.get_extra_info("socket")
    if sock is None or _POLL is None:
        return False
    poller = _POLL()
    poller.register(sock, select.POLLIN | _RDHUP)
    events = poller.poll(0)
    if not events:
        return False
    if events[0][1] & _GONE:
        return True
    if _RDHUP:
        return False  # bytes are waiting but no FIN: a push message, for redis-py to read
    try:  # without POLLRDHUP only a peek tells EOF from data
        with sock.dup() as peer:
            data: bytes = peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return data == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class _ReplaceClosed(redis.asyncio.ConnectionPool):
    """Checkout replaces a pooled connection the server has closed, before sending on it."""

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        if _closed_by_server(connection):
            await connection.disconnect(nowait=True)
        await super().ensure_connection(connection)


class _AsyncPool(_ReplaceClosed, redis.asyncio.BlockingConnectionPool):
    pass


class _AsyncSentinelPool(_ReplaceClosed, redis.asyncio.sentinel.SentinelConnectionPool):
    pass


class _NodeConnection(redis.asyncio.Connection):
    """A cluster node's connection: the node asks should_reconnect() as it checks one out."""

    def should_reconnect(self) -> bool:
        return super().should_reconnect() or _closed_by_server(self)  # type: ignore[no-untyped-call]


class _NodeSSLConnection(_NodeConnection, redis.asyncio.SSLConnection):
    pass


class _Cluster(redis.RedisCluster):
    """RedisCluster whose node connections pack commands in C (storage/packing.py)."""

    def __init__(self, **kwargs: Any) -> None:
        # Every node, found now or later, is built from these kwargs.
        cls = redis.SSLConnection if kwargs.get("ssl") else redis.Connection
        super().__init__(connection_class=packing(cls), **kwargs)


class _AsyncCluster(redis.asyncio.RedisCluster):
    """RedisCluster whose node connections are replaced once the server has closed them, and
    pack commands in C."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # No parameter names the connection class: every node, found now or later, is built
        # from these kwargs. Set before the first command, so before any connection exists.
        node_kwargs = self.nodes_manager.connection_kwargs
        ssl = issubclass(node_kwargs["connection_class"], redis.asyncio.SSLConnection)
        cls = packing(_NodeSSLConnection if ssl else _NodeConnection)
        node_kwargs["connection_class"] = cls
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = cls


class _SentinelMaster(redis.Redis):
    """The master named by Sentinel; closing it closes the connections to the sentinels too."""

    def close(self) -> None:
        super().close()
        pool: Any = self.connection_pool  # a SentinelConnectionPool, made by master_for
        for s in pool.sentinel_manager.sentinels:
            s.close()


class _AsyncSentinelMaster(redis.asyncio.Redis):
    """The asyncio form: without this, the sentinels' sockets leak until garbage collection."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool: Any = self.connection_pool
        for s in pool.sentinel_manager.sentinels:
            await s.aclose()


@dataclass(frozen=True)
class Target:
    """A parsed URL: what kind of deployment, where, and how to log in."""

    kind: Literal["single", "sentinel", "cluster"]
    url: str
    tls: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None


def _url(url: str | None, settings: Settings) -> str:
    url = url or settings.redis_url
    if not url:
        raise ConfigError("no Redis URL: pass one or set REDSESSION_REDIS_URL")
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        raise ConfigError(f"unsupported Redis URL {url!r}: use one of {', '.join(SCHEMES)}")
    return url


def _nodes(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts = netloc.rpartition("@")[2]
    out = []
    for part in hosts.split(","):
        part = part.strip()
        if part.startswith("["):  # [::1]:26379
            host, _, rest = part[1:].partition("]")
            port_s = rest.removeprefix(":")
        else:
            host, _, port_s = part.partition(":")
        if not host:
            raise ConfigError(f"bad Redis URL {url!r}: empty host in {netloc!r}")
        try:
            port = int(port_s) if port_s else default_port
        except ValueError:
            raise ConfigError(f"bad Redis URL {url!r}: port {port_s!r} is not a number") from None
        if not 0 < port < 65536:
            raise ConfigError(f"bad Redis URL {url!r}: port {port} out of range")
        out.append((host, port))
    return tuple(out)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def parse_url(url: str | None, settings: Settings) -> Target:
    """Parse and check a Redis URL; raises ConfigError saying what is wrong with it."""
    url = _url(url, settings)
    scheme = url.partition("://")[0]
    if scheme in ("redis", "rediss", "unix"):
        return Target("single", url, tls=scheme == "rediss")
    # urlsplit cannot take "h1:1,h2:2" as a netloc (it reads one port), so split by hand.
    parts = urlsplit(url)
    rest = url.partition("://")[2]
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    tls = scheme.startswith("rediss")
    user, password = _credentials(netloc)
    if parts.query:
        raise ConfigError(f"bad Redis URL {url!r}: query options are not supported in {scheme}")
    path = [p for p in rest[len(netloc) :].split("/") if p]
    if scheme.endswith("+cluster"):
        if path:
            raise ConfigError(
                f"bad Redis URL {url!r}: a cluster has only database 0; drop {'/'.join(path)!r}"
            )
        nodes = _nodes(netloc, REDIS_PORT, url)
        return Target("cluster", url, tls, nodes, username=user, password=password)
    if not path or len(path) > 2:
        raise ConfigError(
            f"bad Redis URL {url!r}: expected {scheme}://h1:26379[,h2:26379]/service[/db]"
        )
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ConfigError(f"bad Redis URL {url!r}: database {path[1]!r} is not a number") from None
    nodes = _nodes(netloc, SENTINEL_PORT, url)
    return Target("sentinel", url, tls, nodes, unquote(path[0]), db, user, password)


def _auth(t: Target) -> dict[str, Any]:
    return {"username": t.username, "password": t.password}


@dataclass(frozen=True)
class _Flavour:
    """The redis-py classes of one I/O model: the same construction serves sync and asyncio."""

    pool: Any
    single: Any
    cluster: Any
    node: Any
    sentinel: Any
    master: Any
    master_pool: Any
    retry: Any


_SYNC = _Flavour(
    redis.BlockingConnectionPool, redis.Redis, _Cluster, redis.cluster.ClusterNode,
    redis.sentinel.Sentinel, _SentinelMaster, redis.sentinel.SentinelConnectionPool,
    redis.retry.Retry,
)  # fmt: skip
_ASYNC = _Flavour(
    _AsyncPool, redis.asyncio.Redis, _AsyncCluster, redis.asyncio.cluster.ClusterNode,
    redis.asyncio.sentinel.Sentinel, _AsyncSentinelMaster, _AsyncSentinelPool,
    redis.asyncio.retry.Retry,
)  # fmt: skip


def _pack_in_c(pool: Any) -> None:
    """The pool's connections pack commands in C (storage/packing.py). Called on a new pool,
    before it has made a connection."""
    pool.connection_class = packing(pool.connection_class)


def _client(url: str | None, settings: Settings, f: _Flavour) -> Any:
    t = parse_url(url, settings)
    opts = _options(settings, f.retry) | (_tls_options(settings) if t.tls else {})
    try:
        if t.kind == "single":
            if t.tls:
                opts.pop("ssl")  # implied by the rediss:// scheme
            pool = f.pool.from_url(t.url, **_pool(settings), **opts)
            _pack_in_c(pool)
            return f.single.from_pool(pool)  # the client owns (and closes) the pool
        if t.kind == "cluster":
            nodes = [f.node(h, p) for h, p in t.nodes]
            # Per node; like the pool's, beyond it a call fails instead of queueing forever.
            return f.cluster(
                startup_nodes=nodes, max_connections=settings.max_connections, **opts, **_auth(t)
            )
        sentinel_opts = {k: v for k, v in opts.items() if k != "decode_responses"}
        sentinel = f.sentinel(list(t.nodes), sentinel_kwargs=sentinel_opts)
        master = sentinel.master_for(
            t.service, redis_class=f.master, connection_pool_class=f.master_pool, db=t.db,
            **opts, **_auth(t),
        )  # fmt: skip
        _pack_in_c(master.connection_pool)
        return master
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as e:
        # RedisCluster reads the topology at construction: no startup node answered.
        raise StorageUnavailable(f"Redis at {t.url!r} is unavailable: {e}") from e
    except (ValueError, TypeError, redis.RedisError) as e:
        raise ConfigError(f"bad Redis URL {t.url!r}: {e}") from e


def sync_client(url: str | None, settings: Settings) -> SyncClient:
    """A client for ``url`` (or Settings.redis_url): one server, Sentinel's master, or a cluster."""
    client: SyncClient = _client(url, settings, _SYNC)
    return client


def async_client(url: str | None, settings: Settings) -> AsyncClient:
    """The asyncio counterpart of sync_client; connects lazily, on first use."""
    client: AsyncClient = _client(url, settings, _ASYNC)
    return client


__all__ = ["SCHEMES", "AsyncClient", "SyncClient", "Target", "async_client", "check_tls_files",
           "parse_url", "sync_client"]  # fmt: skip
