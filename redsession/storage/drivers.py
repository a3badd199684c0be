"""The drivers: the only code that does Redis I/O for the store's operations.

A store operation is a generator of commands (commands.Eval, Batch, Scan and OnEachPrimary); a
driver runs it to completion on a redis-py client, sync or asyncio, standalone or cluster.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redsession.errors import CorruptData, StorageError, StorageUnavailable
from redsession.storage.commands import Arg, Cmd, Eval, OnEachPrimary, Op, Reply, Scan, T


def _error(e: RedisError | UnicodeDecodeError) -> StorageError | CorruptData:
    if isinstance(e, UnicodeDecodeError):
        # Only someone writing to our keys directly puts such bytes there; the reply may have
        # been decoded by redis-py (a decode_responses client) or by the operation.
        return CorruptData(f"Redis holds bytes that are not UTF-8 where redsession keeps text: {e}")
    if isinstance(e, (RedisConnectionError, RedisTimeoutError)):
        return StorageUnavailable(f"Redis is unavailable: {e}")
    return StorageError(f"Redis refused the command: {e}")


def _evalsha_args(cmd: Eval) -> tuple[Arg, ...]:
    return (cmd.script.sha, len(cmd.keys), *cmd.keys, *cmd.args)


class SyncDriver:
    """Runs store operations on a redis-py client (standalone or cluster)."""

    def __init__(self, client: redis.Redis | redis.RedisCluster) -> None:
        self.client = client

    def run(self, op: Op[T]) -> T:
        try:
            cmd = next(op)
            while True:
                cmd = op.send(self._execute(cmd))
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
                return self.client.evalsha(*_evalsha_args(cmd))  # type: ignore[arg-type]
            except NoScriptError:
                # On a cluster SCRIPT LOAD goes to every primary; NOSCRIPT comes back
                # after a failover or a SCRIPT FLUSH, as scripts are cached per node.
                self.client.script_load(cmd.script.source)
                return self.client.evalsha(*_evalsha_args(cmd))  # type: ignore[arg-type]
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

    def _scan(self, cmd: Scan) -> Reply:
        kw: dict[str, Any] = {"match": cmd.match, "count": cmd.count, "_type": cmd.type}
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


class AsyncDriver:
    """Runs store operations on a redis.asyncio client; never blocks the event loop."""

    def __init__(self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster) -> None:
        self.client = client

    async def run(self, op: Op[T]) -> T:
        try:
            cmd = next(op)
            while True:
                cmd = op.send(await self._execute(cmd))
        except StopIteration as stop:
            result: T = stop.value
            return result
        except (RedisError, UnicodeDecodeError) as e:
            raise _error(e) from e

    async def _execute(self, cmd: Cmd) -> Reply:
        if isinstance(cmd, Scan):
            return await self._scan(cmd)
        if isinstance(cmd, Eval):
            try:
                return await self.client.evalsha(*_evalsha_args(cmd))  # type: ignore[arg-type]
            except NoScriptError:
                await self.client.script_load(cmd.script.source)
                return await self.client.evalsha(*_evalsha_args(cmd))  # type: ignore[arg-type]
        if isinstance(cmd, OnEachPrimary):
            if isinstance(self.client, redis.asyncio.RedisCluster):
                nodes = self.client.get_primaries()
                return await asyncio.gather(*(n.execute_command(*cmd.command) for n in nodes))
            return [await self.client.execute_command(*cmd.command)]  # type: ignore[no-untyped-call]
        if len(cmd.commands) == 1:
            return [await self.client.execute_command(*cmd.commands[0])]
        pipe = self.client.pipeline(transaction=False)
        for c in cmd.commands:
            pipe.execute_command(*c)
        return await pipe.execute()

    async def _scan(self, cmd: Scan) -> Reply:
        kw: dict[str, Any] = {"match": cmd.match, "count": cmd.count, "_type": cmd.type}
        if not isinstance(self.client, redis.asyncio.RedisCluster):
            cur, keys = await self.client.scan(cmd.cursor or 0, **kw)
            return cur or None, keys
        # redis-py types scan() for one server; on a cluster cursors come per node.
        reply: Any
        if cmd.cursor is None:
            reply = await self.client.scan(**kw)  # cursor 0 on every primary at once
            cursors, keys = reply
        else:
            name, cur = next(iter(cmd.cursor.items()))
            node = self.client.get_node(node_name=name)
            reply = await self.client.scan(cur, target_nodes=node, **kw)
            cursors, keys = {**cmd.cursor, **reply[0]}, reply[1]
        return _next_cursors(cursors), keys


def _next_cursors(cursors: dict[str, int]) -> dict[str, int] | None:
    left = {name: int(c) for name, c in cursors.items() if int(c)}
    return left or None
