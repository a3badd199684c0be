from __future__ import annotations

import os
import time

import redis

from redsession.services.leader import LeaderLock, read_heartbeat
from redsession.storage.keys import Keys

KEYS = Keys("t")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lock(client: redis.Redis, lease: float = 5.0, clock: FakeClock | None = None) -> LeaderLock:
    if clock is None:
        return LeaderLock(client, KEYS, lease)
    return LeaderLock(client, KEYS, lease, clock=clock)


def test_only_one_holder(redis_client: redis.Redis) -> None:
    a, b = lock(redis_client), lock(redis_client)
    assert a.token != b.token
    assert a.acquire()
    assert not b.acquire()
    assert a.held
    assert not b.held
    assert redis_client.get(KEYS.worker_leader) == a.token.encode()
    # Acquiring again is a renewal for the holder.
    assert a.acquire()


def test_lock_and_heartbeat_carry_the_lease(redis_client: redis.Redis) -> None:
    a = lock(redis_client, lease=5.0)
    assert a.acquire()
    for key in (KEYS.worker_leader, KEYS.worker_heartbeat):
        assert 4000 < redis_client.pttl(key) <= 5000
    info = read_heartbeat(redis_client, KEYS)
    assert info is not None
    assert info.token == a.token
    assert info.pid == os.getpid()


def test_renew_and_release_only_by_the_token_holder(redis_client: redis.Redis) -> None:
    a, b = lock(redis_client), lock(redis_client)
    assert a.acquire()
    assert not b.renew()
    assert not b.release()
    assert redis_client.get(KEYS.worker_leader) == a.token.encode()
    assert read_heartbeat(redis_client, KEYS) is not None
    assert a.release()
    assert not a.held
    assert redis_client.exists(KEYS.worker_leader, KEYS.worker_heartbeat) == 0
    assert b.acquire()


def test_release_keeps_a_heartbeat_someone_else_wrote(redis_client: redis.Redis) -> None:
    a, b = lock(redis_client, lease=0.2), lock(redis_client)
    assert a.acquire()
    time.sleep(0.3)  # a's lease runs out in Redis
    assert b.acquire()
    assert not a.release()
    info = read_heartbeat(redis_client, KEYS)
    assert info is not None
    assert info.token == b.token


def test_a_leader_whose_lease_expired_cannot_renew(redis_client: redis.Redis) -> None:
    a, b = lock(redis_client, lease=0.2), lock(redis_client)
    assert a.acquire()
    time.sleep(0.3)
    assert b.acquire()
    assert not a.renew()
    assert not a.held
    assert redis_client.get(KEYS.worker_leader) == b.token.encode()


def test_held_follows_the_local_clock(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    a = lock(redis_client, lease=10.0, clock=clock)
    assert a.acquire()
    clock.now += 9.0
    assert a.held
    assert 0 < a.remaining() < 1.0
    # Redis may be unreachable, but past the lease we no longer count ourselves leader.
    clock.now += 1.0
    assert not a.held
    assert a.remaining() == 0


def test_holder_ttl(redis_client: redis.Redis) -> None:
    a, b = lock(redis_client, lease=5.0), lock(redis_client, lease=5.0)
    assert b.holder_ttl() == 0
    assert a.acquire()
    assert 4.0 < b.holder_ttl() <= 5.0


def test_unreadable_heartbeat_is_no_heartbeat(redis_client: redis.Redis) -> None:
    assert read_heartbeat(redis_client, KEYS) is None
    redis_client.set(KEYS.worker_heartbeat, b"not json")
    assert read_heartbeat(redis_client, KEYS) is None


def test_heartbeat_dies_with_the_lease(redis_client: redis.Redis) -> None:
    a = lock(redis_client, lease=0.2)
    assert a.acquire()
    assert read_heartbeat(redis_client, KEYS) is not None
    time.sleep(0.3)  # the holder died: nobody renews
    assert read_heartbeat(redis_client, KEYS) is None
