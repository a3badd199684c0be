"""Hypothesis properties of the store, against a real server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redsession import SessionManager
from redsession.model.models import SessionExport
from redsession.storage.commands import Eval
from redsession.storage.keys import Keys

K = Keys()
PROPS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)

keys_st = st.text(min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20) | (
    st.floats(allow_nan=False, allow_infinity=False)
)
json_st = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys_st, inner, max_size=4),
    max_leaves=12,
)
context_st = st.dictionaries(keys_st, json_st, max_size=5)
topic_st = st.text(min_size=1, max_size=10)
interaction_st = st.fixed_dictionaries(
    {
        "user_message": st.text(max_size=50),
        "assistant_response": st.none() | st.text(max_size=50),
        "metadata": context_st,
        "topics": st.lists(topic_st, max_size=3, unique=True),
    }
)


@PROPS
@given(context=context_st, interactions=st.lists(interaction_st, max_size=8), patch=context_st)
def test_export_import_round_trip(
    manager: SessionManager,
    redis_client: redis.Redis,
    context: dict[str, Any],
    interactions: list[dict[str, Any]],
    patch: dict[str, Any],
) -> None:
    redis_client.flushall()
    sid = manager.create_session("u1", context=context).session_id
    for i in interactions:
        manager.log_interaction(sid, **i)
    manager.update_context(sid, patch)
    doc = manager.export_session_data(sid)
    redis_client.flushall()
    manager.import_session_data(doc)
    assert manager.export_session_data(sid) == doc
    assert manager.get_session(sid).total_interactions == len(interactions)


def _doc(sid: str, items: list[tuple[str, int]], context: dict[str, Any]) -> dict[str, Any]:
    """An export document holding interactions (id, seconds after T0)."""
    interactions = [
        {"kind": "interaction", "id": iid, "timestamp": T0 + timedelta(seconds=sec),
         "user_message": f"{sid}/{iid}"}
        for iid, sec in sorted(items, key=lambda x: x[1])
    ]
    stamps = [T0] + [i["timestamp"] for i in interactions]  # type: ignore[misc]
    return SessionExport.model_validate(
        {
            "session": {
                "session_id": sid, "user_id": "u1", "created_at": T0, "last_activity": max(stamps),
                "total_interactions": len(interactions), "context": context,
            },
            "history": interactions,
            "expires_at": datetime.now(timezone.utc) + timedelta(days=1),
        }
    ).model_dump(mode="json")  # fmt: skip


ids_st = st.sampled_from([f"i{n}" for n in range(12)])
items_st = st.lists(st.tuples(ids_st, st.integers(0, 5)), max_size=8, unique_by=lambda x: x[0])


@PROPS
@given(p_items=items_st, s_items=items_st, p_ctx=context_st, s_ctx=context_st)
def test_merge_properties(
    manager: SessionManager,
    redis_client: redis.Redis,
    p_items: list[tuple[str, int]],
    s_items: list[tuple[str, int]],
    p_ctx: dict[str, Any],
    s_ctx: dict[str, Any],
) -> None:
    redis_client.flushall()
    manager.import_session_data(_doc("p", p_items, p_ctx))
    manager.import_session_data(_doc("s", s_items, s_ctx))
    merged = manager.merge_sessions("p", "s")
    history = manager.get_history("p")
    ids = [i.id for i in history]
    # Nothing lost, nothing duplicated; the primary's copy of a shared id wins.
    assert sorted(ids) == sorted({i for i, _ in p_items} | {i for i, _ in s_items})
    p_ids = {i for i, _ in p_items}
    for i in history:
        assert i.user_message == f"{'p' if i.id in p_ids else 's'}/{i.id}"
    # Time order, ties by id.
    assert [(i.timestamp, i.id) for i in history] == sorted((i.timestamp, i.id) for i in history)
    assert merged.total_interactions == len(history)
    for k, v in p_ctx.items():
        if not isinstance(v, dict):
            assert merged.context[k] == v  # primary wins conflicts
    # Idempotent.
    before = manager.export_session_data("p")
    manager.merge_sessions("p", "s")
    assert manager.export_session_data("p") == before


@pytest.mark.parametrize("crash_after", [1, 2, 3])
def test_merge_resumes_after_a_crash_at_any_step(
    manager: SessionManager, redis_client: redis.Redis, crash_after: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Crash after the Nth script of a merge, re-run it: same result as one clean merge."""
    docs = (_doc("p", [("a", 1), ("c", 3)], {"x": 1}), _doc("s", [("b", 2), ("c", 3)], {"y": 2}))
    for d in docs:
        manager.import_session_data(d)
    clean = manager.merge_sessions("p", "s").model_dump(exclude={"expires_at", "history"})
    clean_history = manager.get_history("p")
    redis_client.flushall()
    for d in docs:
        manager.import_session_data(d)

    seen = 0
    execute = manager._driver._execute

    def crashing(cmd: Any) -> Any:
        nonlocal seen
        if isinstance(cmd, Eval):
            seen += 1
            if seen > crash_after:
                raise RuntimeError("crash")
        return execute(cmd)

    monkeypatch.setattr(manager._driver, "_execute", crashing)
    with pytest.raises(RuntimeError):
        manager.merge_sessions("p", "s")
    monkeypatch.undo()
    again = manager.merge_sessions("p", "s").model_dump(exclude={"expires_at", "history"})
    assert again == clean
    assert manager.get_history("p") == clean_history


ops_st = st.lists(st.sampled_from(["log", "context", "resume", "get", "reimport"]), max_size=10)


@PROPS
@given(ops=ops_st)
def test_every_key_of_a_session_keeps_one_ttl(
    manager: SessionManager, redis_client: redis.Redis, ops: list[str]
) -> None:
    redis_client.flushall()
    sid = manager.create_session("u1").session_id
    manager.log_interaction(sid, user_message="first")
    for op in ops:
        if op == "log":
            manager.log_interaction(sid, user_message="x")
        elif op == "context":
            manager.update_context(sid, {"n": op})
        elif op == "resume":
            manager.resume_session(sid, "u1")
        elif op == "get":
            manager.get_session(sid)
        else:
            manager.import_session_data(manager.export_session_data(sid), overwrite=True)
        t_hash = redis_client.pexpiretime(K.session(sid))
        t_log = redis_client.pexpiretime(K.log(sid))
        assert t_hash == t_log > 0
        s = manager.get_session(sid)
        assert s.total_interactions == redis_client.llen(K.log(sid))
