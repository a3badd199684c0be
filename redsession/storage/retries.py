"""When the drivers send a command again, and when a write counts as replicated.

Retrying is the policy (which errors a retry can cure, the backoff, the deadline), Replicas
the WAIT that writes may require; drivers.py applies both to every store operation.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio.retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MasterDownError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from redsession.storage.commands import Reply

# What a retry can cure: the connection broke or timed out, or the server is in a failover
# (a replica answering READONLY, a master that lost its link, a server still LOADING its data
# (a ConnectionError in redis-py), a cluster slot moving or down).
TRANSIENT = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, MasterDownError, TryAgainError,
    ClusterDownError,
)  # fmt: skip


def _permanent(e: Exception) -> bool:
    """A connection error that waiting will not cure: refused credentials or certificate."""
    if isinstance(e, (AuthenticationError, AuthorizationError)):
        return True
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class Retrying:
    """Sends a command again on a transient error, with backoff, until a deadline.

    Safe for writes because every write script carries an operation id: a write whose reply
    was lost, sent again, returns its first reply and changes nothing (storage/scripts.py).
    The deadline counts from an operation's first failure, so a call that meets none pays
    nothing for it (a try block); a call that keeps failing gives up after the deadline, at
    most one backoff (1 s) and one socket timeout later. A deadline of 0 sends each command
    once.
    """

    BACKOFF_BASE, BACKOFF_CAP = 0.02, 1.0  # seconds: 20 ms, 40 ms, ... up to 1 s, jittered

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.backoff = ExponentialWithJitterBackoff(cap=self.BACKOFF_CAP, base=self.BACKOFF_BASE)
        # retries=-1: no count limit; fail() below ends the loop at the deadline.
        self.sync = Retry(self.backoff, -1, TRANSIENT)
        self.asyncio = redis.asyncio.retry.Retry(self.backoff, -1, TRANSIENT)

    def fail(self, started: float) -> Callable[[Exception], None]:
        """The failure handler of an operation that first failed at ``started``."""

        def fail(e: Exception) -> None:
            if _permanent(e) or time.monotonic() - started >= self.deadline:
                raise e

        return fail

    def again(self, cmd: Callable[[], Reply], first: Exception, started: float) -> Reply:
        """``cmd`` sent again after its ``first`` failure, until it succeeds or fails for
        good; ``started``: when the operation first failed."""
        fail = self.fail(started)
        fail(first)
        time.sleep(self.backoff.compute(1))
        return self.sync.call_with_retry(cmd, fail)

    async def again_async(
        self, cmd: Callable[[], Awaitable[Reply]], first: Exception, started: float
    ) -> Reply:
        """again() for asyncio (redis.asyncio's Retry awaits its failure handler)."""
        fail = self.fail(started)

        async def async_fail(e: Exception) -> None:
            fail(e)

        fail(first)
        await asyncio.sleep(self.backoff.compute(1))
        return await self.asyncio.call_with_retry(cmd, async_fail)


NO_RETRIES = Retrying(0)


class NotReplicated(RedisConnectionError):
    """A write the master applied but too few replicas confirmed (Settings.write_replicas):
    transient, so the write is sent again; its operation id makes that safe."""


@dataclass(frozen=True)
class Replicas:
    """Writes wait for this many replicas (WAIT), up to ``timeout_ms``; 0: they do not."""

    count: int = 0
    timeout_ms: int = 1000

    def check(self, acked: int) -> None:
        if acked < self.count:
            raise NotReplicated(
                f"the write reached {acked} of {self.count} replicas in {self.timeout_ms} ms"
            )


NO_REPLICAS = Replicas()
