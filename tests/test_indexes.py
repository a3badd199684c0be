"""The one index rule (storage/indexes.py), rendered as Lua and as pipelined commands.

The same scenario of writes runs three ways, with one stopped clock: on a single server with
the Lua rendering (the scripts update the indexes), on a single server with the pipelined
rendering (what a cluster does), and on a 3-primary cluster. Every index must end up the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from redsession import SessionManager, Settings
from redsession.storage.connection import sync_client
from redsession.storage.keys import Keys
from redsession.storage.store import Store
from tests.topology import Cluster

K = Keys()
# Every run starts at the same instant; near the real now, since Redis expires keys by its own.
T0 = datetime.now(timezone.utc).replace(microsecond=0)
USERS = ("alice", "bob", "a@b.com", "tenant:carol")


class Clock:
    """Stands still; each step of the scenario moves it on by a known amount."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> None:
        self.now += timedelta(milliseconds=7)


def _scenario(m: SessionManager, clock: Clock) -> None:
    def step() -> None:
        clock.tick()

    for sid, uid in (("s1", "alice"), ("s2", "alice"), ("s3", "bob"), ("s5", "a@b.com")):
        m.create_session(uid, session_id=sid)
        step()
    m.log_interaction("s1", user_message="hi", topics=["t"])
    step()
    m.update_context("s2", {"k": 1})
    step()
    m.resume_session("s3", "bob")
    step()
    m.delete_session("s2")  # alice keeps s1: she stays in the users index
    step()
    doc = m.export_session_data("s5")
    doc["session"]["session_id"], doc["session"]["user_id"] = "s4", "tenant:carol"
    m.import_session_data(doc)
    step()
    doc["session"]["user_id"] = "bob"
    m.import_session_data(doc, overwrite=True)  # s4 changes owner: carol has none left
    step()
    m.merge_sessions("s1", "s3", allow_cross_user=True)  # bob keeps s4
    step()
    m.delete_session("s1")  # alice's last session: she leaves the users index
    step()
    # s5 expires: Redis drops its keys (here by hand), and cleanup, a week later by the
    # clock, finds it in the expiry index. a@b.com has no session left.
    m.client.delete(K.session("s5"), K.log("s5"))
    clock.now += timedelta(days=8)
    assert m.cleanup_expired_sessions() == 1


def _state(client: redis.Redis | redis.RedisCluster) -> dict[str, Any]:
    """Every index with its scores, and which users still have preference keys alive."""
    out: dict[str, Any] = {}
    for key in (K.sessions, K.users, K.expiry, K.dirty, *(K.user_sessions(u) for u in USERS)):
        out[key] = [(m.decode(), s) for m, s in client.zrange(key, 0, -1, withscores=True)]
    return out


def _run(m: SessionManager) -> dict[str, Any]:
    clock = Clock()
    m.core.clock = clock
    _scenario(m, clock)
    return _state(m.client)


@pytest.fixture
def single(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def test_lua_and_pipelined_forms_have_the_same_effect(
    single: redis.Redis, redis_cluster: Cluster
) -> None:
    settings = Settings()
    lua = SessionManager(single, settings)
    lua_state = _run(lua)
    assert [u for u, _ in lua_state[K.users]] == ["bob"]

    single.flushall()
    piped = SessionManager(single, settings)
    piped.core.store = Store(piped.keys, settings, cluster=True)  # the cluster's second step
    assert _run(piped) == lua_state

    redis_cluster.flush()
    with SessionManager(sync_client(redis_cluster.url, settings), settings) as on_cluster:
        assert on_cluster.core.store.cluster
        assert _run(on_cluster) == lua_state


def test_users_leave_the_users_index_on_a_cluster(redis_cluster: Cluster) -> None:
    """The bug this rule fixed: the cluster's delete step left users with no session behind."""
    redis_cluster.flush()
    s = Settings()
    with SessionManager(sync_client(redis_cluster.url, s), s) as m:
        a = m.create_session("alice").session_id
        b = m.create_session("alice").session_id
        m.create_session("bob")
        assert m.stats().users == 2
        m.delete_session(a)
        assert m.stats().users == 2  # alice still has b
        m.delete_session(b)
        assert m.stats().users == 1
        assert list(m.iter_user_ids()) == ["bob"]
