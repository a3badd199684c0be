"""The valkey-glide driver (the ``glide`` extra): store operations on valkey-glide's asyncio
client, which multiplexes every caller of a loop onto one connection per server and does its
protocol work in Rust.

Chosen by Settings.async_driver = "valkey-glide" for AsyncSessionManager.from_url and the
services built on it (the API, the MCP server). redis-py stays the default, and the only
driver of the sync manager, the worker and the CLI. It serves one server and a cluster; it
refuses what it cannot do as well as redis-py (ConfigError, at construction):

- Sentinel URLs: valkey-glide has no Sentinel client.
- write_replicas: WAIT holds up the connection it is sent on, here everyone's.
- tls_check_hostname off: valkey-glide can only switch off all certificate checks.

The driver hands the store what redis-py would: replies in redis-py's RESP2 shapes (_SHAPES),
failures as redis-py's exceptions (redis_error), so the retry policy, the error mapping and
every decoder are the ones the redis-py drivers use. Blocking commands (XREAD BLOCK) go on a
second connection of their own, so that a wait holds up no other caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.connection import parse_url as redis_py_url
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redsession.config import Settings
from redsession.errors import ConfigError
from redsession.storage.commands import Arg, Batch, Cmd, Eval, OnEachPrimary, Reply, Scan, text
from redsession.storage.connection import REDIS_PORT, check_tls_files, parse_url
from redsession.storage.drivers import AsyncRunner, _next_cursors, function_missing
from redsession.storage.retries import NO_REPLICAS, NO_RETRIES, Replicas, Retrying

try:
    import glide
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ConfigError(
        "async_driver 'valkey-glide' needs valkey-glide: pip install 'redsession[glide]'"
    ) from e

# -- failures, as redis-py's exceptions ------------------------------------------------------

# valkey-glide names the errors it knows ("An error was signalled by the server: - ReadOnly:
# ..."); the others keep the server's code ("NOAUTH: ..."). Each, as redis-py raises it.
_KINDS: dict[str, type[RedisError]] = {
    "ReadOnly": ReadOnlyError, "MasterDown": MasterDownError, "TryAgain": TryAgainError,
    "ClusterDown": ClusterDownError, "BusyLoadingError": BusyLoadingError,
    "NoScriptError": NoScriptError, "PermissionDenied": AuthorizationError,
    "AuthenticationFailed": AuthenticationError, "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError, "NOPERM": AuthorizationError,
}  # fmt: skip
_SIGNALLED = "An error was signalled by the server: - "


def redis_error(e: glide.GlideError) -> RedisError:
    """valkey-glide's failure as the redis-py exception of the same meaning."""
    message = str(e)
    if isinstance(e, glide.TimeoutError):
        return RedisTimeoutError(message)
    if isinstance(e, (glide.ConnectionError, glide.ClosingError)):
        return RedisConnectionError(message)
    kind = message.removeprefix(_SIGNALLED).partition(":")[0]
    return _KINDS.get(kind, ResponseError)(message)


# -- replies, in redis-py's shapes ------------------------------------------------------------


def _stream(reply: Any) -> Any:
    # {id: [[field, value], ...]} -> [[id, [field, value, ...]]], as XRANGE replies in RESP2
    if not isinstance(reply, dict):
        return reply
    return [[i, [x for pair in pairs for x in pair]] for i, pairs in reply.items()]


def _streams(reply: Any) -> Any:
    # {stream: {id: ...}} -> [[stream, entries]]
    if not isinstance(reply, dict):
        return reply
    return [[name, _stream(found)] for name, found in reply.items()]


def _scores(reply: Any) -> Any:
    # {member: score} -> [member, score, ...]
    if not isinstance(reply, dict):
        return reply
    return [x for pair in reply.items() for x in pair]


# valkey-glide parses some replies into maps even in RESP2; these commands' replies go back
# to the flat arrays the store's decoders read (commands.py, events.py).
_SHAPES: dict[bytes, Callable[[Any], Any]] = {
    b"XRANGE": _stream, b"XREVRANGE": _stream, b"XREAD": _streams,
    b"ZRANGE": _scores, b"ZREVRANGE": _scores, b"ZRANGEBYSCORE": _scores,
}  # fmt: skip


def _shaped(command: Sequence[Any], reply: Any) -> Any:
    shape = _SHAPES.get(command[0].upper())
    return reply if shape is None else shape(reply)


def _args(args: Sequence[Arg]) -> list[Any]:
    """Arguments as valkey-glide takes them: text or bytes (numbers as redis-py writes them)."""
    return [a.encode() if type(a) is str else a if type(a) is bytes else repr(a).encode()
            for a in args]  # fmt: skip


# -- the clients of one event loop -----------------------------------------------------------


class Glide:
    """valkey-glide clients for one deployment and one event loop, made on first use: one
    for every command, a second for blocking ones. ``fresh()`` makes another loop's."""

    def __init__(self, config: Any, cluster: bool) -> None:
        self.config, self.cluster = config, cluster
        self._clients: dict[bool, Any] = {}
        self._pending: dict[bool, asyncio.Future[Any]] = {}

    def fresh(self) -> Glide:
        return Glide(self.config, self.cluster)

    async def client(self, blocking: bool = False) -> Any:
        c = self._clients.get(blocking)
        if c is not None:
            return c
        pending = self._pending.get(blocking)
        if pending is None:  # the first caller connects; the others wait for its client
            cls = glide.GlideClusterClient if self.cluster else glide.GlideClient
            pending = self._pending[blocking] = asyncio.ensure_future(cls.create(self.config))
        try:
            c = await asyncio.shield(pending)
        except glide.GlideError as e:
            raise redis_error(e) from e
        finally:
            if self._pending.get(blocking) is pending and pending.done():
                del self._pending[blocking]
        self._clients[blocking] = c
        return c

    def drop(self, blocking: bool) -> None:
        """Forget a client valkey-glide has closed for good: the next call makes a new one."""
        self._clients.pop(blocking, None)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()

    def close_now(self) -> None:
        """close() from outside any loop, for the clients of a loop that has closed:
        valkey-glide's close() never suspends (it fails what is pending and frees the
        core's client), so one step runs it to the end."""
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            step = c.close()
            try:
                step.send(None)
            except StopIteration:
                continue
            step.close()  # it suspended after all: the finalizer frees it with the client


# -- the driver ------------------------------------------------------------------------------


class GlideDriver(AsyncRunner[Glide]):
    """Runs store operations on valkey-glide (one server or a cluster)."""

    def __init__(
        self, glide_: Glide, retrying: Retrying = NO_RETRIES, replicas: Replicas = NO_REPLICAS
    ) -> None:
        if replicas.count:
            raise ConfigError(
                "write_replicas needs async_driver 'redis-py': WAIT would hold up "
                "valkey-glide's shared connection"
            )
        super().__init__(glide_, retrying, replicas)

    def client_for_loop(self) -> Glide:
        """The running loop's clients. valkey-glide delivers every client's replies through
        the loop that made its first client, so two live loops would leave one waiting
        forever: a second loop is refused while the first is open, and takes over (with
        clients of its own) once it has closed, as with repeated asyncio.run()."""
        loop = asyncio.get_running_loop()
        with self._lock:
            home = self._home
            if home is None or home is loop:
                self._home = loop
                return self.client
            if not home.is_closed():
                raise ConfigError(
                    "async_driver 'valkey-glide' serves one event loop at a time, and this "
                    "manager's first loop is still open; use async_driver 'redis-py' to "
                    "call it from several loops at once"
                )
            old, self.client, self._home = self.client, self.client.fresh(), loop
        old.close_now()
        return self.client

    async def _close(self, client: Glide) -> None:
        await client.close()

    async def _execute(self, client: Glide, cmd: Cmd) -> Reply:
        blocking = isinstance(cmd, Batch) and cmd.blocking
        c = await client.client(blocking)
        try:
            return await self._send(c, client.cluster, cmd)
        except glide.ClosingError as e:
            client.drop(blocking)
            raise redis_error(e) from e
        except glide.GlideError as e:
            raise redis_error(e) from e

    async def _send(self, c: Any, cluster: bool, cmd: Cmd) -> Reply:
        if isinstance(cmd, Eval):
            fcall = _args(cmd.fcall())  # valkey-glide routes FCALL by its keys
            try:
                return await c.custom_command(fcall)
            except glide.RequestError as e:
                if not function_missing(e):
                    raise
                load = [b"FUNCTION", b"LOAD", b"REPLACE", cmd.script.library.encode()]
                await (c.custom_command(load, glide.AllPrimaries()) if cluster
                       else c.custom_command(load))  # fmt: skip
                return await c.custom_command(fcall)
        if isinstance(cmd, Scan):
            return await self._scan(c, cluster, cmd)
        if isinstance(cmd, OnEachPrimary):
            if cluster:
                replies = await c.custom_command(_args(cmd.command), glide.AllPrimaries())
                return list(replies.values()) if isinstance(replies, dict) else [replies]
            return [await c.custom_command(_args(cmd.command))]
        commands = [_args(command) for command in cmd.commands]
        if len(commands) == 1:
            return [_shaped(commands[0], await c.custom_command(commands[0]))]
        batch = glide.ClusterBatch(is_atomic=False) if cluster else glide.Batch(is_atomic=False)
        for command in commands:
            batch.custom_command(command)
        replies = await c.exec(batch, raise_on_error=True)
        return [_shaped(command, r) for command, r in zip(commands, replies)]

    async def _scan(self, c: Any, cluster: bool, cmd: Scan) -> Reply:
        args = [b"MATCH", cmd.match.encode(), b"COUNT", b"%d" % cmd.page_size,
                b"TYPE", cmd.type.encode()]  # fmt: skip
        if not cluster:
            cur, keys = await c.custom_command([b"SCAN", b"%d" % (cmd.cursor or 0), *args])
            return int(cur) or None, keys
        # On a cluster the cursor is {node address: cursor}, one per primary still to walk.
        if cmd.cursor is None:
            replies = await c.custom_command([b"SCAN", b"0", *args], glide.AllPrimaries())
            cursors = {text(node): int(r[0]) for node, r in replies.items()}
            keys = [k for r in replies.values() for k in r[1]]
            return _next_cursors(cursors), keys
        name, cur = next(iter(cmd.cursor.items()))
        host, _, port = name.rpartition(":")
        route = glide.ByAddressRoute(host.strip("[]"), int(port))
        nxt, keys = await c.custom_command([b"SCAN", b"%d" % cur, *args], route)
        return _next_cursors({**cmd.cursor, name: int(nxt)}), keys


# -- configuration ---------------------------------------------------------------------------


def glide_for(url: str | None, settings: Settings) -> Glide:
    """valkey-glide clients (made on first use) for ``url`` or Settings.redis_url."""
    t = parse_url(url, settings)
    if t.kind == "sentinel":
        raise ConfigError(
            f"async_driver 'valkey-glide' cannot follow Sentinel ({t.url!r}): valkey-glide "
            "has no Sentinel client; use async_driver 'redis-py'"
        )
    if t.kind == "single":
        try:
            parts = redis_py_url(t.url)  # type: ignore[no-untyped-call]
        except ValueError as e:
            raise ConfigError(f"bad Redis URL {t.url!r}: {e}") from e
        if "path" in parts:
            addresses = [glide.NodeAddress(unix_socket_path=parts["path"])]
        else:
            host, port = parts.get("host", "localhost"), parts.get("port", REDIS_PORT)
            addresses = [glide.NodeAddress(host, port)]
        user, password, db = parts.get("username"), parts.get("password"), parts.get("db", 0)
    else:
        addresses = [glide.NodeAddress(h, p) for h, p in t.nodes]
        user, password, db = t.username, t.password, 0
    tls = None
    if t.tls:
        check_tls_files(settings)
        if not settings.tls_check_hostname:
            raise ConfigError(
                "tls_check_hostname off needs async_driver 'redis-py': valkey-glide can only "
                "switch off every check of the server's certificate"
            )
        tls = glide.TlsAdvancedConfiguration(
            root_pem_cacerts=settings.tls_ca_certs.read_bytes() if settings.tls_ca_certs else None,
            client_cert_path=settings.tls_certfile, client_key_path=settings.tls_keyfile,
        )  # fmt: skip
    common: dict[str, Any] = {
        "use_tls": t.tls,
        "credentials": glide.ServerCredentials(password, user) if password is not None else None,
        "request_timeout": int(settings.socket_timeout * 1000),
        "protocol": glide.ProtocolVersion.RESP2,  # the replies redis-py's drivers get
        "lazy_connect": True,  # like redis-py's clients: connect on first use
    }
    advanced = {"connection_timeout": int(settings.connect_timeout * 1000), "tls_config": tls}
    if t.kind == "cluster":
        return Glide(glide.GlideClusterClientConfiguration(
            addresses, advanced_config=glide.AdvancedGlideClusterClientConfiguration(**advanced),
            **common,
        ), cluster=True)  # fmt: skip
    return Glide(glide.GlideClientConfiguration(
        addresses, database_id=int(db) if db else None,
        advanced_config=glide.AdvancedGlideClientConfiguration(**advanced), **common,
    ), cluster=False)  # fmt: skip
