"""The worker leader lock: a Redis key with a lease, held by one token, plus a heartbeat key.

Like redis-py's lock.py, only the holder of the token may renew or release the lock; the
checks run inside Lua so that "is it still mine?" and "extend/delete it" are one step. The
lock and the heartbeat are separate keys in separate cluster slots, so every script here
touches one key only.

This module issues its own Redis commands: the one exception (with the server launcher) to
"only store.py speaks Redis", because the lock must keep working whatever the store does.
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

from redsession.keys import Keys
from redsession.models import utcnow

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
    ``held`` is the local view: true until the lease we last obtained runs out by our clock,
    so a leader that cannot reach Redis stops acting as leader before anyone else can start.
    """

    # KEYS[1]: the lock. ARGV[1]: our token, ARGV[2]: lease in milliseconds.
    # Returns 1 if the lock was ours and now runs for a full lease again, else 0.
    RENEW = """
    if redis.call('get', KEYS[1]) == ARGV[1] then
        return redis.call('pexpire', KEYS[1], ARGV[2])
    end
    return 0
    """

    # KEYS[1]: a key (the lock, or the heartbeat). ARGV[1]: the value we wrote there.
    # Returns 1 if it held that value and is now deleted, else 0 (someone else's: keep it).
    RELEASE = """
    if redis.call('get', KEYS[1]) == ARGV[1] then
        return redis.call('del', KEYS[1])
    end
    return 0
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
        self._renew = client.register_script(self.RENEW)
        self._release = client.register_script(self.RELEASE)

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
        if self.client.set(self.keys.worker_leader, self.token, nx=True, px=self.lease_ms):
            self._granted(start)
            return True
        return self.renew(start)

    def renew(self, start: float | None = None) -> bool:
        """Extend the lease and write the heartbeat, only if the lock is still ours.

        Returns False (and drops the local lease at once) when someone else holds it or it
        expired; raises redis.ConnectionError / redis.TimeoutError when Redis is unreachable.
        """
        start = self._clock() if start is None else start
        if not self._renew(keys=[self.keys.worker_leader], args=[self.token, self.lease_ms]):
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
        released = bool(self._release(keys=[self.keys.worker_leader], args=[self.token]))
        if self._heartbeat is not None:
            self._release(keys=[self.keys.worker_heartbeat], args=[self._heartbeat])
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
