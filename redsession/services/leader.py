"""The worker leader lock: a Redis key with a lease, held by one token, plus a heartbeat key.

Built on redis-py's Lock (SET NX PX to take it; its token-checked Lua scripts to renew and
release it), with one addition: a local monotonic deadline. The leader counts itself leader
only until its lease would run out by its own clock, so a leader that cannot reach Redis
stops acting before anyone else can start. The lock and the heartbeat are separate keys in
separate cluster slots, so every script here touches one key only.

This module issues its own Redis commands: the one exception (with the server launcher) to
"only redsession.storage speaks Redis", because the lock must keep working whatever the
store does.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from redsession.model.models import utcnow
from redsession.storage.keys import Keys

log = logging.getLogger(__name__)

# Redis' clock and ours tick at slightly different rates; trust a lease a little less long.
_DRIFT_FACTOR = 0.01
_DRIFT_FIXED = 0.002


@dataclass(frozen=True)
class LeaderInfo:
    """Who holds the lock, as its heartbeat says."""

    token: str
    host: str
    pid: int
    at: str


class LeaderLock:
    """One worker's handle on the leader lock.

    ``acquire`` takes the lock when free (or confirms it is still ours), ``renew`` extends it
    and writes the heartbeat, ``release`` gives it up; all three act only for our token.
    ``held`` is the local view: true until the lease we last obtained runs out by our clock.
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        keys: Keys,
        lease: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.keys = keys
        self.lease = lease
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self._clock = clock
        self._valid_until = 0.0
        self._heartbeat: str | None = None
        # thread_local=False: the main thread renews; shutdown may release from another.
        self._lock = Lock(client, keys.worker_leader, timeout=lease, thread_local=False)
        self._lock.local.token = self.token.encode()  # renew/release act for our token only

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    @property
    def held(self) -> bool:
        """True while our last successful acquire/renew still covers now (by our clock)."""
        return self._clock() < self._valid_until

    def remaining(self) -> float:
        """Seconds of our lease left by our clock (0 when not held)."""
        return max(0.0, self._valid_until - self._clock())

    def acquire(self) -> bool:
        """Take the lock if it is free, or renew it if it is already ours.

        Raises redis.ConnectionError / redis.TimeoutError when Redis cannot be reached.
        """
        start = self._clock()
        if self._lock.acquire(blocking=False, token=self.token):
            self._granted(start)
            return True
        return self.renew(start)

    def renew(self, start: float | None = None) -> bool:
        """Extend the lease and write the heartbeat, only if the lock is still ours.

        Returns False (and drops the local lease at once) when someone else holds it or it
        expired; raises redis.ConnectionError / redis.TimeoutError when Redis is unreachable.
        """
        start = self._clock() if start is None else start
        try:
            self._lock.reacquire()
        except LockError:  # LockNotOwnedError: expired, or someone else's now
            if self._valid_until:
                log.warning("lost the leader lock (lease expired or taken over)")
            self._valid_until = 0.0
            return False
        self._granted(start)
        return True

    def _granted(self, start: float) -> None:
        # Counted from before the command went out: Redis' own expiry is later than this.
        self._valid_until = start + self.lease * (1 - _DRIFT_FACTOR) - _DRIFT_FIXED
        self._write_heartbeat()

    def _write_heartbeat(self) -> None:
        payload = json.dumps(
            {
                "token": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "at": utcnow().isoformat(),
            }
        )
        # The heartbeat dies with the lease: --check turns false when the leader does.
        self.client.set(self.keys.worker_heartbeat, payload, px=self.lease_ms)
        self._heartbeat = payload

    def release(self) -> bool:
        """Delete the lock and our heartbeat if they are still ours; True if the lock was."""
        self._valid_until = 0.0
        self._lock.local.token = self.token.encode()  # ours, even after a step-down
        released = _release(self._lock)
        if self._heartbeat is not None:
            beat = Lock(self.client, self.keys.worker_heartbeat, thread_local=False)
            beat.local.token = self._heartbeat.encode()
            _release(beat)  # only if it is still the one we wrote
            self._heartbeat = None
        return released

    def forget(self) -> None:
        """Stop considering ourselves leader without talking to Redis (it is unreachable)."""
        self._valid_until = 0.0

    def holder_ttl(self) -> float:
        """Seconds until the current holder's lease runs out (0 if free, lease if unknown)."""
        ms = int(self.client.pttl(self.keys.worker_leader))
        if ms == -2:
            return 0.0
        return ms / 1000 if ms >= 0 else self.lease


def _release(lock: Lock) -> bool:
    """Delete the lock's key if it still holds the lock's token (redis-py's check-and-delete)."""
    try:
        lock.release()
    except LockError:  # LockNotOwnedError: expired, or someone else's now
        return False
    return True


def read_heartbeat(client: redis.Redis | redis.RedisCluster, keys: Keys) -> LeaderInfo | None:
    """The live leader's heartbeat, or None when there is none (no leader, or it died)."""
    raw = client.get(keys.worker_heartbeat)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        return LeaderInfo(
            token=str(doc["token"]), host=str(doc["host"]), pid=int(doc["pid"]), at=str(doc["at"])
        )
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable worker heartbeat %r", raw)
        return None
