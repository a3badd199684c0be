"""AsyncSessionManager: the same operations as SessionManager, on asyncio."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redsession import (
    AsyncSessionManager,
    InvalidSessionId,
    PermissionDenied,
    SessionManager,
    SessionMerged,
    SessionNotFound,
    StorageUnavailable,
)
from tests.conftest import ServerFactory
from tests.topology import Cluster, async_cluster_manager, connected_clients


async def test_lifecycle(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("alice", context={"a": 1})
    await amanager.log_interaction(s.session_id, user_message="hi", topics=["t"])
    r = await amanager.resume_session(s.session_id, "alice")
    assert r.total_interactions == 1
    assert r.history[0].user_message == "hi"
    assert r.topics == ["t"]
    assert await amanager.create_or_resume_session("alice", s.session_id) == s.session_id
    with pytest.raises(PermissionDenied):
        await amanager.resume_session(s.session_id, "bob")
    with pytest.raises(InvalidSessionId):
        await amanager.get_session("../x")
    ctx = await amanager.update_context(s.session_id, {"b": {"c": 2}})
    assert ctx.context == {"a": 1, "b": {"c": 2}}
    await amanager.set_preferences("alice", {"lang": "de"})
    assert await amanager.get_preferences("alice") == {"lang": "de"}
    page = await amanager.list_active_sessions("alice")
    assert [x.session_id for x in page.sessions] == [s.session_id]
    assert [sid async for sid in amanager.iter_session_ids()] == [s.session_id]
    doc = await amanager.export_session_data(s.session_id)
    await amanager.delete_session(s.session_id)
    with pytest.raises(SessionNotFound):
        await amanager.get_session(s.session_id)
    assert await amanager.import_session_data(doc, overwrite=True) == s.session_id
    assert await amanager.export_session_data(s.session_id) == doc
    assert (await amanager.stats()).sessions == 1
    assert await amanager.cleanup_expired_sessions() == 0


async def test_concurrent_appends_and_patches(amanager: AsyncSessionManager) -> None:
    sid = (await amanager.create_session("alice")).session_id
    await asyncio.gather(
        *(amanager.log_interaction(sid, user_message=str(i)) for i in range(200)),
        *(amanager.update_context(sid, {f"k{i}": i}) for i in range(20)),
    )
    s = await amanager.get_session(sid)
    assert s.total_interactions == 200
    assert s.context == {f"k{i}": i for i in range(20)}
    assert sorted(int(i.user_message) for i in await amanager.get_history(sid)) == list(range(200))


async def test_merge(amanager: AsyncSessionManager) -> None:
    a = (await amanager.create_session("alice")).session_id
    b = (await amanager.create_session("alice")).session_id
    await amanager.log_interaction(b, user_message="from b")
    merged = await amanager.merge_sessions(a, b)
    assert merged.total_interactions == 1
    with pytest.raises(SessionMerged):
        await amanager.log_interaction(b, user_message="late")


async def test_outage_is_storage_unavailable(server_factory: ServerFactory) -> None:
    server = server_factory()
    m = AsyncSessionManager.from_url(
        server.url, socket_timeout=1.0, connect_timeout=0.5, retry_deadline=0.5
    )
    try:
        sid = (await m.create_session("alice")).session_id
        server.stop()
        with pytest.raises(StorageUnavailable):
            await m.log_interaction(sid, user_message="down")
        server.start()
        await m.log_interaction(sid, user_message="up")
        assert (await m.get_session(sid)).total_interactions == 1
    finally:
        await m.close()


async def test_async_iteration_visits_each_once(
    amanager: AsyncSessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("redsession.storage.walk.PAGE", 2)
    ids = [(await amanager.create_session("alice")).session_id for _ in range(5)]
    seen: list[str] = []
    async for sid in amanager.iter_session_ids("alice"):
        seen.append(sid)
        rest = [x for x in ids if x not in seen]
        if rest:
            await amanager.log_interaction(rest[0], user_message="touched")
    assert sorted(seen) == sorted(ids)


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_both_managers_have_the_same_methods_and_signatures() -> None:
    """Every operation exists on both, with the same parameters (the async one a coroutine,
    or an async iterator where the sync one is an iterator)."""
    sync, aio = _public(SessionManager), _public(AsyncSessionManager)
    assert set(sync) == set(aio)
    for name, sig in sync.items():
        a = aio[name]
        assert list(a.parameters.values()) == list(sig.parameters.values()), name
        if name in ("from_url", "run"):
            continue
        fn = getattr(AsyncSessionManager, name)
        assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), name
        if inspect.isasyncgenfunction(fn):
            assert sig.return_annotation.startswith("Iterator["), name
        else:
            assert a.return_annotation == sig.return_annotation, name


# -- Redis restarts: stale pooled connections ------------------------------------------------

RESTARTS = 20  # the first calls after a restart raced the pool: each cycle is another chance
WARM = 8  # concurrent calls: that many pooled connections


async def _calls(m: AsyncSessionManager, sid: str, tag: str) -> list[str]:
    """Sequential calls, then concurrent ones; every one must succeed. Returns the messages.

    The pool hands out its most recently used connection first, so sequential calls reuse
    one connection; the concurrent ones check out every other pooled connection as well.
    """
    texts = [f"{tag}.{i}" for i in range(3 + WARM)]
    for text in texts[:3]:
        await m.log_interaction(sid, user_message=text)
    await asyncio.gather(*(m.log_interaction(sid, user_message=t) for t in texts[3:]))
    return texts


async def test_pooled_connections_are_replaced_after_restarts(
    server_factory: ServerFactory,
) -> None:
    """Every call after a restart works: checkout replaces the connections the old server
    closed, before sending (no call is retried, so a lost reply never duplicates a write)."""
    server = server_factory()
    m = AsyncSessionManager.from_url(server.url, socket_timeout=1.0, connect_timeout=0.5)
    try:
        sid = (await m.create_session("alice")).session_id
        await asyncio.gather(*(m.get_session(sid) for _ in range(WARM)))
        # valkey-glide multiplexes every call onto one connection
        warm = 1 if m.settings.async_driver == "valkey-glide" else WARM
        assert connected_clients(server.url, warm) == warm
        sent: list[str] = []
        for cycle in range(RESTARTS):
            server.restart()  # blocks the loop: it has not yet read the closes it will find
            sent += await _calls(m, sid, str(cycle))
        history = [x.user_message for x in await m.get_history(sid)]
        assert sorted(history) == sorted(sent)  # all kept by the AOF, none twice
    finally:
        await m.close()


async def test_call_while_down_fails_at_the_retry_deadline_then_the_next_calls_work(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    m = AsyncSessionManager.from_url(
        server.url, socket_timeout=0.5, connect_timeout=0.5, retry_deadline=0.5
    )
    try:
        sid = (await m.create_session("alice")).session_id
        await asyncio.gather(*(m.get_session(sid) for _ in range(WARM)))
        server.stop()
        t = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await m.log_interaction(sid, user_message="down")
        # Retried until the deadline (0.5 s), then given up: not before it, and not a hang
        # (at most one backoff, 1 s, and one socket timeout, 0.5 s, past it).
        assert 0.5 <= time.monotonic() - t < 2.5
        server.start()
        sent = await _calls(m, sid, "up")
        assert sorted(x.user_message for x in await m.get_history(sid)) == sorted(sent)
    finally:
        await m.close()


def _cluster_ok(cluster: Cluster) -> bool:
    for port in cluster.ports:
        try:
            with redis.Redis(port=port, socket_timeout=1.0) as c:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
        except redis.ConnectionError:
            return False
    return True


@pytest.mark.slow
async def test_cluster_node_connections_are_replaced_after_restarts(tmp_path: Path) -> None:
    """The cluster's node connections (its own, not a pool's) get the same checkout check.

    A restarted primary refuses commands for its first 2 s (Redis' CLUSTER_WRITABLE_DELAY),
    so real restarts are few; the 20 cycles close every client connection server-side
    (CLIENT KILL), which leaves the client in the same state as a restart does.
    """
    with Cluster(tmp_path / "cluster", masters=3, replicas=0) as cluster:
        m = async_cluster_manager(cluster, socket_timeout=1.0, connect_timeout=0.5)
        try:
            owners: dict[int, str] = {}  # primary's port -> a session stored there
            with cluster.client() as c:
                while len(owners) < cluster.masters:
                    sid = (await m.create_session("alice")).session_id
                    owners.setdefault(c.get_node_from_key(sid).port, sid)
            sids = list(owners.values())
            await asyncio.gather(*(m.get_session(sid) for sid in sids for _ in range(3)))

            async def cycle(n: int, close: Callable[[], None]) -> None:
                close()
                for sid in sids:  # a node hands out its connections in turn: each from before
                    await m.log_interaction(sid, user_message=str(n))
                await asyncio.gather(*(m.get_session(sid) for sid in sids for _ in range(3)))

            def restart() -> None:
                for server in cluster.servers:
                    server.restart()
                deadline = time.monotonic() + 15
                while not _cluster_ok(cluster):
                    assert time.monotonic() < deadline, "the cluster did not come back"
                    time.sleep(0.05)

            def kill_clients() -> None:
                for port in cluster.ports:
                    with redis.Redis(port=port) as c:
                        assert c.client_kill_filter(_type="normal", skipme=True) > 0

            for n in range(2):
                await cycle(n, restart)
            for n in range(2, 2 + RESTARTS):
                await cycle(n, kill_clients)
            for sid in sids:
                assert (await m.get_session(sid)).total_interactions == 2 + RESTARTS
        finally:
            await m.close()
