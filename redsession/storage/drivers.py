"""The drivers: the only code that does Redis I/O for the store's operations.

A store operation is a generator of commands (commands.Eval, Batch, Scan and OnEachPrimary); a
driver runs it to completion on a redis-py client, sync or asyncio, standalone or cluster,
retrying as retries.py says.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from redsession.errors import CorruptData, StorageError, StorageUnavailable
from redsession.storage.commands import Cmd, Eval, OnEachPrimary, Op, Reply, Scan, T
from redsession.storage.retries import NO_REPLICAS, NO_RETRIES, TRANSIENT, Replicas, Retrying

AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
C = TypeVar("C")  # an asyncio driver's client
# Told of each operation run: its name (the generator's), seconds taken, the error or None.
Observer = Callable[[str, float, BaseException | None], None]


def _error(e: RedisError | UnicodeDecodeError) -> StorageError | CorruptData:
    if isinstance(e, UnicodeDecodeError):
        # Only someone writing to our keys directly puts such bytes there; the reply may have
        # been decoded by redis-py (a decode_responses client) or by the operation.
        return CorruptData(f"Redis holds bytes that are not UTF-8 where redsession keeps text: {e}")
    if isinstance(e, TRANSIENT):  # after the deadline, or refused credentials or certificate
        return StorageUnavailable(f"Redis is unavailable: {e}")
    return StorageError(f"Redis refused the command: {e}")


def _name(op: Op[Any]) -> str:
    return getattr(op, "__name__", "operation")  # a generator's: its function's name


def function_missing(e: Exception) -> bool:
    """Whether FCALL failed because the server has not got the script's library: one that
    lost its functions (FUNCTION FLUSH, no persistence) or never had them (a new node, a
    new release). The driver loads it (FUNCTION LOAD, on every primary of a cluster) and
    calls again."""
    return "Function not found" in str(e)


def _target(client: redis.RedisCluster | redis.asyncio.RedisCluster, cmd: Eval) -> Any:
    # The node of the script's slot, named by the driver: redis-py would otherwise ask the
    # server for FCALL's keys (COMMAND GETKEYS) on every call. A MOVED reply still sends it
    # on, and a failed node has redis-py reload its map before the driver retries.
    return client.get_node_from_key(cmd.keys[0])


def _direct_pool(client: object) -> Any:
    """The pool of a client on one server (or Sentinel's master), whose scripts the driver
    sends straight down a pooled connection; None for a cluster or a single-connection
    client, which keep redis-py's command path.

    redis-py's command path wraps each command in its own retry loop and observability
    records, which cost more per call than the script's own client work; the driver retries
    on its own (Retrying), and the connection still disconnects on any error as redis-py's
    does (Connection.send_packed_command and read_response), so the pool never gets back a
    connection with a reply half read.
    """
    if isinstance(client, redis.Redis) and client.connection is None:
        return client.connection_pool
    if isinstance(client, redis.asyncio.Redis) and not client.single_connection_client:
        return client.connection_pool
    return None


class SyncDriver:
    """Runs store operations on a redis-py client (standalone or cluster)."""

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        retrying: Retrying = NO_RETRIES,
        replicas: Replicas = NO_REPLICAS,
    ) -> None:
        self.client = client
        self.retrying = retrying
        self.replicas = replicas
        self.observer: Observer | None = None
        self._pool = _direct_pool(client)

    def run(self, op: Op[T]) -> T:
        if self.observer is None:
            return self._run(op)
        start, error = time.perf_counter(), None
        try:
            return self._run(op)
        except BaseException as e:
            error = e
            raise
        finally:
            self.observer(_name(op), time.perf_counter() - start, error)

    def _run(self, op: Op[T]) -> T:
        started = 0.0  # when a command of the operation first failed
        try:
            cmd = next(op)
            while True:
                try:
                    reply = self._execute(cmd)
                except TRANSIENT as e:
                    started = started or time.monotonic()
                    reply = self.retrying.again(partial(self._execute, cmd), e, started)
                cmd = op.send(reply)
        except StopIteration as stop:
            result: T = stop.value
            return result
        except (RedisError, UnicodeDecodeError) as e:
            raise _error(e) from e

    def _execute(self, cmd: Cmd) -> Reply:
        if isinstance(cmd, Scan):
            return self._scan(cmd)
        if isinstance(cmd, Eval):
            try:
                return self._eval(cmd)
            except ResponseError as e:
                if not function_missing(e):
                    raise
                # REPLACE: a concurrent load of the same code is no error. On a cluster
                # redis-py sends FUNCTION LOAD to every primary.
                self.client.function_load(cmd.script.library, replace=True)
                return self._eval(cmd)
        if isinstance(cmd, OnEachPrimary):
            if isinstance(self.client, redis.RedisCluster):
                nodes = self.client.get_primaries()  # type: ignore[no-untyped-call]
                return [n.redis_connection.execute_command(*cmd.command) for n in nodes]
            return [self.client.execute_command(*cmd.command)]  # type: ignore[no-untyped-call]
        if len(cmd.commands) == 1:
            return [self.client.execute_command(*cmd.commands[0])]  # type: ignore[no-untyped-call]
        pipe = self.client.pipeline(transaction=False)
        for c in cmd.commands:
            pipe.execute_command(*c)
        return pipe.execute()

    def _eval(self, cmd: Eval) -> Reply:
        r = self.replicas
        if not (r.count and cmd.script.writes):
            pool = self._pool
            if pool is not None:
                conn = pool.get_connection()
                try:
                    conn.send_packed_command(conn.pack_command(*cmd.fcall()))
                    return conn.read_response()
                finally:
                    pool.release(conn)
            if isinstance(self.client, redis.RedisCluster):
                target = _target(self.client, cmd)
                return self.client.execute_command(*cmd.fcall(), target_nodes=target)  # type: ignore[no-untyped-call]
            return self.client.execute_command(*cmd.fcall())  # type: ignore[no-untyped-call]
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command(*cmd.fcall())
        pipe.execute_command("WAIT", r.count, r.timeout_ms)
        reply, acked = pipe.execute()
        r.check(acked)
        return reply

    def _scan(self, cmd: Scan) -> Reply:
        kw: dict[str, Any] = {"match": cmd.match, "count": cmd.page_size, "_type": cmd.type}
        if not isinstance(self.client, redis.RedisCluster):
            cur, keys = self.client.scan(cmd.cursor or 0, **kw)
            return cur or None, keys
        # redis-py types scan() for one server; on a cluster cursors come per node.
        reply: Any
        if cmd.cursor is None:
            reply = self.client.scan(**kw)  # cursor 0 on every primary at once
            cursors, keys = reply
        else:
            name, cur = next(iter(cmd.cursor.items()))
            node = self.client.get_node(node_name=name)  # type: ignore[no-untyped-call]
            reply = self.client.scan(cur, target_nodes=node, **kw)
            cursors, keys = {**cmd.cursor, **reply[0]}, reply[1]
        return _next_cursors(cursors), keys


class AsyncRunner(Generic[C]):
    """Runs store operations on an asyncio client of type C, never blocking the event loop:
    what every asyncio driver shares (retries, the observer, the operation loop). Each
    driver says which client serves the running loop (client_for_loop), how a command is
    executed and how a client is closed."""

    def __init__(
        self, client: C, retrying: Retrying = NO_RETRIES, replicas: Replicas = NO_REPLICAS
    ) -> None:
        self.client = client
        self.retrying = retrying
        self.replicas = replicas
        self._home: asyncio.AbstractEventLoop | None = None  # the loop ``client`` is on
        self._lock = threading.Lock()  # threads with loops of their own ask at once
        self.observer: Observer | None = None

    def client_for_loop(self) -> C:
        """The client of the running event loop."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the running loop's client (another loop's cannot be closed from here)."""
        await self._close(self.client_for_loop())

    async def run(self, op: Op[T]) -> T:
        if self.observer is None:
            return await self._run(op)
        start, error = time.perf_counter(), None
        try:
            return await self._run(op)
        except BaseException as e:
            error = e
            raise
        finally:
            self.observer(_name(op), time.perf_counter() - start, error)

    async def _run(self, op: Op[T]) -> T:
        client = self.client_for_loop()
        started = 0.0  # when a command of the operation first failed
        try:
            cmd = next(op)
            while True:
                try:
                    reply = await self._execute(client, cmd)
                except TRANSIENT as e:
                    started = started or time.monotonic()
                    again = partial(self._execute, client, cmd)
                    reply = await self.retrying.again_async(again, e, started)
                cmd = op.send(reply)
        except StopIteration as stop:
            result: T = stop.value
            return result
        except (RedisError, UnicodeDecodeError) as e:
            raise _error(e) from e

    async def _execute(self, client: C, cmd: Cmd) -> Reply:
        """One command's reply; failures raised as redis-py's exceptions (retries.py)."""
        raise NotImplementedError

    async def _close(self, client: C) -> None:
        raise NotImplementedError


class AsyncDriver(AsyncRunner[AsyncClient]):
    """Runs store operations on a redis.asyncio client (standalone or cluster).

    A redis.asyncio client belongs to the event loop that first used it. Given a
    ``factory``, the driver keeps one client per running loop (``Runner.run_sync`` of an
    agent framework, a thread with its own loop): the first loop gets ``client``, each other
    loop one made by ``factory``, dropped with its loop. Without one, every call uses
    ``client``.
    """

    def __init__(
        self,
        client: AsyncClient,
        factory: Callable[[], AsyncClient] | None = None,
        retrying: Retrying = NO_RETRIES,
        replicas: Replicas = NO_REPLICAS,
    ) -> None:
        super().__init__(client, retrying, replicas)
        self._factory = factory
        self._others: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def client_for_loop(self) -> AsyncClient:
        if self._factory is None:
            return self.client
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._home is None or self._home is loop:
                self._home = loop
                return self.client
            self._forget_closed_loops()
            if self._home.is_closed():  # its loop is gone, and its connections with it
                self.client = self._others.pop(loop, None) or self._factory()
                self._home = loop
                return self.client
            other = self._others.get(loop)
            if other is None:
                other = self._others[loop] = self._factory()
            return other

    def _forget_closed_loops(self) -> None:
        # A client holds its loop (through its streams), so its weak key alone never lets
        # go: drop the clients of closed loops, whose sockets close as they are collected.
        for gone in [loop for loop in self._others if loop.is_closed()]:
            del self._others[gone]

    async def _close(self, client: AsyncClient) -> None:
        with self._lock:
            self._forget_closed_loops()
        await client.aclose()

    async def _execute(self, client: AsyncClient, cmd: Cmd) -> Reply:
        if isinstance(client, redis.asyncio.RedisCluster):
            # Concurrent first calls on a new cluster client race its own start-up (some
            # fail with "Connection closed by server"); initialize() is one flag test once
            # the client is set up.
            await client.initialize()
        if isinstance(cmd, Scan):
            return await self._scan(client, cmd)
        if isinstance(cmd, Eval):
            try:
                return await self._eval(client, cmd)
            except ResponseError as e:
                if not function_missing(e):
                    raise
                await client.function_load(cmd.script.library, replace=True)
                return await self._eval(client, cmd)
        if isinstance(cmd, OnEachPrimary):
            if isinstance(client, redis.asyncio.RedisCluster):
                nodes = client.get_primaries()
                return await asyncio.gather(*(n.execute_command(*cmd.command) for n in nodes))
            return [await client.execute_command(*cmd.command)]  # type: ignore[no-untyped-call]
        if len(cmd.commands) == 1:
            return [await client.execute_command(*cmd.commands[0])]
        pipe = client.pipeline(transaction=False)
        for c in cmd.commands:
            pipe.execute_command(*c)
        return await pipe.execute()

    async def _eval(self, client: AsyncClient, cmd: Eval) -> Reply:
        r = self.replicas
        if not (r.count and cmd.script.writes):
            pool = _direct_pool(client)  # per call: a loop of its own has a client of its own
            if pool is not None:
                conn = await pool.get_connection()
                try:
                    await conn.send_packed_command(conn.pack_command(*cmd.fcall()))
                    return await conn.read_response()
                finally:
                    await pool.release(conn)
            if isinstance(client, redis.asyncio.RedisCluster):
                return await client.execute_command(*cmd.fcall(), target_nodes=_target(client, cmd))
            return await client.execute_command(*cmd.fcall())  # type: ignore[no-untyped-call]
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(*cmd.fcall())
        pipe.execute_command("WAIT", r.count, r.timeout_ms)
        reply, acked = await pipe.execute()
        r.check(acked)
        return reply

    async def _scan(self, client: AsyncClient, cmd: Scan) -> Reply:
        kw: dict[str, Any] = {"match": cmd.match, "count": cmd.page_size, "_type": cmd.type}
        if not isinstance(client, redis.asyncio.RedisCluster):
            cur, keys = await client.scan(cmd.cursor or 0, **kw)
            return cur or None, keys
        # redis-py types scan() for one server; on a cluster cursors come per node.
        reply: Any
        if cmd.cursor is None:
            reply = await client.scan(**kw)  # cursor 0 on every primary at once
            cursors, keys = reply
        else:
            name, cur = next(iter(cmd.cursor.items()))
            node = client.get_node(node_name=name)
            reply = await client.scan(cur, target_nodes=node, **kw)
            cursors, keys = {**cmd.cursor, **reply[0]}, reply[1]
        return _next_cursors(cursors), keys


def _next_cursors(cursors: dict[str, int]) -> dict[str, int] | None:
    left = {name: int(c) for name, c in cursors.items() if int(c)}
    return left or None
