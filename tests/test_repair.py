"""The index repair on a single server (the cluster cases are in test_cluster.py)."""

from __future__ import annotations

import redis

from redsession import AsyncSessionManager, SessionManager
from redsession.maintenance.repair import RepairReport
from redsession.storage.keys import Keys, expiry_member

K = Keys()


def test_repair_on_a_single_server(redis_url: str) -> None:
    m = SessionManager.from_url(redis_url)
    try:
        sid = m.create_session("alice").session_id
        m.client.delete(K.sessions)
        assert m.repair_indexes() == RepairReport(sessions=1, added=1, removed=0, users_removed=0)
        assert list(m.iter_session_ids()) == [sid]
    finally:
        m.close()


async def test_async_repair_on_a_single_server(
    redis_url: str, redis_client: redis.Redis
) -> None:
    m = AsyncSessionManager.from_url(redis_url)
    try:
        sid = (await m.create_session("alice")).session_id
        redis_client.delete(K.sessions)
        got = await m.repair_indexes()
        assert got == RepairReport(sessions=1, added=1, removed=0, users_removed=0)
        assert [i async for i in m.iter_session_ids()] == [sid]
    finally:
        await m.close()


def test_repair_of_a_consistent_store_changes_nothing(
    manager: SessionManager, redis_client: redis.Redis
) -> None:
    sids = [manager.create_session(f"u{i % 3}").session_id for i in range(12)]
    manager.log_interaction(sids[0], user_message="hi")
    manager.delete_session(sids[1])
    before = {
        k: redis_client.zrange(k, 0, -1, withscores=True) for k in (K.sessions, K.users, K.expiry)
    }
    assert manager.repair_indexes() == RepairReport(
        sessions=11, added=0, removed=0, users_removed=0
    )
    after = {
        k: redis_client.zrange(k, 0, -1, withscores=True) for k in (K.sessions, K.users, K.expiry)
    }
    assert after == before


def test_repair_ignores_keys_that_are_not_sessions(
    manager: SessionManager, redis_client: redis.Redis
) -> None:
    sid = manager.create_session("alice").session_id
    redis_client.hset(K.session("bad id!"), "user_id", "x")  # not a valid id: not ours
    redis_client.set(K.session("str"), "not a hash")
    redis_client.zadd(K.expiry, {expiry_member("ghost", "alice"): 5})
    report = manager.repair_indexes()
    assert report == RepairReport(sessions=1, added=0, removed=1, users_removed=0)
    assert redis_client.zrange(K.expiry, 0, -1) == [expiry_member(sid, "alice").encode()]


def test_repair_prunes_the_index_of_every_valid_user_id(
    manager: SessionManager, redis_client: redis.Redis
) -> None:
    """User ids are not session ids: a@b.com and tenant:bob have indexes to prune too."""
    for uid in ("a@b.com", "tenant:bob", "plain"):
        manager.create_session(uid)
        redis_client.zadd(K.user_sessions(uid), {"ghost": 1})  # a session that is gone
    report = manager.repair_indexes()
    assert report.removed == 3
    for uid in ("a@b.com", "tenant:bob", "plain"):
        assert b"ghost" not in redis_client.zrange(K.user_sessions(uid), 0, -1)
