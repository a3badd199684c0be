"""AsyncSessionManager: the same operations as SessionManager, on asyncio."""

from __future__ import annotations

import asyncio
import inspect

import pytest

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
    m = AsyncSessionManager.from_url(server.url, socket_timeout=1.0, connect_timeout=0.5)
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
