"""RedsessionSessionService against ADK's session-service contract (google-adk 2.x).

ADK's own contract suite is not published, so these are our own tests of the behaviour its
services share (docs: google.adk.sessions.BaseSessionService). Every test runs on one server
and on a 3-primary Redis Cluster, but the example's (it starts its own server) and the
cold-client one (a cluster's alone).
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

pytest.importorskip("google.adk")

from google.adk.agents import LlmAgent
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events import Event, EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import Session
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from redsession import AsyncSessionManager, Settings, StorageUnavailable
from redsession.integrations.adk import RedsessionSessionService, owner_of, session_key
from redsession.storage.connection import sync_client
from tests.topology import Cluster

APP, USER = "shop", "alice"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "adk_chat.py"


@pytest.fixture
async def manager(url: str) -> AsyncIterator[AsyncSessionManager]:
    m = AsyncSessionManager.from_url(url)
    yield m
    await m.close()


@pytest.fixture
def service(manager: AsyncSessionManager) -> RedsessionSessionService:
    return RedsessionSessionService(manager)


def text(role: str, s: str) -> types.Content:
    return types.Content(role=role, parts=[types.Part.from_text(text=s)])


def event(
    author: str = "agent", *, at: float | None = None, delta: dict[str, Any] | None = None,
    **kw: Any,
) -> Event:  # fmt: skip
    kw.setdefault("actions", EventActions(state_delta=delta or {}))
    if at is not None:
        kw["timestamp"] = at
    return Event(author=author, **kw)


def dumps(events: list[Event]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


async def get(
    service: RedsessionSessionService, sid: str, *, app: str = APP, user: str = USER,
    config: GetSessionConfig | None = None,
) -> Session | None:  # fmt: skip
    return await service.get_session(app_name=app, user_id=user, session_id=sid, config=config)


async def got(service: RedsessionSessionService, sid: str, **kw: Any) -> Session:
    s = await get(service, sid, **kw)
    assert s is not None
    return s


# -- create and get ------------------------------------------------------------------------


async def test_create_then_get_is_the_same_session(service: RedsessionSessionService) -> None:
    await service.create_session(
        app_name=APP, user_id="bob", session_id="earlier", state={"app:old": 0, "user:b": 1}
    )
    created = await service.create_session(
        app_name=APP, user_id=USER, session_id="s1",
        state={"k": 1, "nested": {"a": [1, 2.5, None]}, "app:a": "x", "user:u": True,
               "temp:t": "never stored"},
    )  # fmt: skip
    # Merged: the session's own keys, every app: key (bob's too), this user's user: keys.
    want = {"k": 1, "nested": {"a": [1, 2.5, None]}, "app:a": "x", "app:old": 0, "user:u": True}
    assert created.state == want
    assert (created.id, created.app_name, created.user_id, created.events) == ("s1", APP, USER, [])
    assert await get(service, "s1") == created


async def test_create_without_id_makes_a_uuid(service: RedsessionSessionService) -> None:
    a = await service.create_session(app_name=APP, user_id=USER)
    b = await service.create_session(app_name=APP, user_id=USER)
    assert a.id != b.id
    assert str(uuid.UUID(a.id)) == a.id
    assert await get(service, a.id) == a


async def test_padded_id_reads_and_deletes(service: RedsessionSessionService) -> None:
    created = await service.create_session(app_name=APP, user_id=USER, session_id="  s1 ")
    assert created.id == "s1"  # as ADK's in-memory service: the id is stripped
    assert await get(service, "  s1 ") == created == await get(service, "s1")
    await service.delete_session(app_name=APP, user_id=USER, session_id=" s1  ")
    assert await get(service, "s1") is None


async def test_duplicate_id_raises_and_applies_nothing(service: RedsessionSessionService) -> None:
    first = await service.create_session(
        app_name=APP, user_id=USER, session_id="s1", state={"k": 1, "app:a": 1, "user:u": 1}
    )
    with pytest.raises(AlreadyExistsError):
        await service.create_session(
            app_name=APP, user_id=USER, session_id="s1",
            state={"k": 2, "app:a": 2, "app:new": 2, "user:u": 2, "user:new": 2},
        )  # fmt: skip
    assert await get(service, "s1") == first
    assert await service.get_user_state(app_name=APP, user_id=USER) == {"u": 1}
    other = await service.create_session(app_name=APP, user_id="bob")
    assert {k: v for k, v in other.state.items() if k.startswith("app:")} == {"app:a": 1}
    # The same id is free for another user of the app, and in another app.
    await service.create_session(app_name=APP, user_id="bob", session_id="s1")
    await service.create_session(app_name="other", user_id=USER, session_id="s1")


async def test_get_respects_user_id(service: RedsessionSessionService) -> None:
    a = await service.create_session(
        app_name=APP, user_id=USER, session_id="s1", state={"who": USER}
    )
    b = await service.create_session(
        app_name=APP, user_id="bob", session_id="s1", state={"who": "bob"}
    )
    await service.append_event(a, event(delta={"n": 1}))
    assert (await got(service, "s1")).state == {"who": USER, "n": 1}
    bob = await got(service, "s1", user="bob")
    assert bob == b
    assert bob.state == {"who": "bob"}
    assert bob.events == []
    assert await get(service, "s1", user="carol") is None
    assert await get(service, "s1", app="other") is None


async def test_get_missing_is_none(service: RedsessionSessionService) -> None:
    assert await get(service, "nope") is None
    assert await get(service, "nope", app="no-app", user="nobody") is None
    cfg = GetSessionConfig(num_recent_events=3, after_timestamp=1.0)
    assert await get(service, "nope", config=cfg) is None


# -- event filters -------------------------------------------------------------------------


ALL = [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("n", "want"), [(0, []), (None, ALL), (2, [4, 5]), (1, [5]), (5, ALL), (99, ALL)]
)
async def test_num_recent_events(
    service: RedsessionSessionService, n: int | None, want: list[int]
) -> None:
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    for i in range(1, 6):
        await service.append_event(s, event(delta={"i": i}))
    read = await got(service, "s1", config=GetSessionConfig(num_recent_events=n))
    assert [e.actions.state_delta["i"] for e in read.events] == want
    assert read.state["i"] == 5  # the filter limits events, never state


# Events carry their own times: far in the past, or ahead of the clock that stores them.
@pytest.mark.parametrize("base", [1_000.0, time.time() + 3_600.0], ids=["past", "ahead"])
@pytest.mark.parametrize(
    ("after", "n", "want"),
    [(3.0, None, [3, 4, 5]), (3.0, 1, [5]), (3.0, 2, [4, 5]), (3.0, 9, [3, 4, 5]),
     (3.0, 0, []), (2.5, None, [3, 4, 5]), (5.0, None, [5]), (5.5, None, []),
     (0.0, None, [1, 2, 3, 4, 5]), (0.0, 2, [4, 5])],
)  # fmt: skip
async def test_after_timestamp(
    service: RedsessionSessionService, base: float, after: float, n: int | None, want: list[int]
) -> None:
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    for i in range(1, 6):
        await service.append_event(s, event(at=base + i, delta={"i": i}))
    cfg = GetSessionConfig(after_timestamp=base + after, num_recent_events=n)
    read = await got(service, "s1", config=cfg)
    assert [e.timestamp - base for e in read.events] == want  # inclusive
    assert read.state["i"] == 5


async def test_after_timestamp_of_logged_interactions(
    service: RedsessionSessionService, manager: AsyncSessionManager
) -> None:
    key = session_key(APP, USER, "s1")
    await manager.create_session(owner_of(APP, USER), session_id=key)
    first = await manager.log_interaction(key, user_message="q1", assistant_response="a1")
    await asyncio.sleep(0.01)
    second = await manager.log_interaction(key, user_message="q2", assistant_response="a2")
    cfg = GetSessionConfig(after_timestamp=second.timestamp.timestamp())
    read = await got(service, "s1", config=cfg)
    assert [e.content.parts[0].text for e in read.events if e.content and e.content.parts] == [
        "q2", "a2"
    ]  # fmt: skip
    cfg = GetSessionConfig(after_timestamp=first.timestamp.timestamp())
    assert len((await got(service, "s1", config=cfg)).events) == 4


# -- listing -------------------------------------------------------------------------------


async def test_list_sessions_order_and_content(service: RedsessionSessionService) -> None:
    # (user, id, time of its one event); created later than all of them: ("alice", "new").
    plan = [("alice", "s2", 10.0), ("bob", "s1", 5.0), ("alice", "s1", 10.0),
            ("bob", "s0", 10.0), ("carol", "a", 7.0)]  # fmt: skip
    for user, sid, at in plan:
        s = await service.create_session(
            app_name=APP, user_id=user, session_id=sid, state={"own": sid, "user:name": user}
        )
        await service.append_event(s, event(at=at, delta={"app:last": sid}))
    await service.create_session(app_name=APP, user_id=USER, session_id="new")
    await service.create_session(app_name="shop2", user_id=USER, session_id="elsewhere")

    everyone = (await service.list_sessions(app_name=APP)).sessions
    order = [("bob", "s1"), ("carol", "a"), ("alice", "s1"), ("alice", "s2"), ("bob", "s0"),
             ("alice", "new")]  # fmt: skip
    assert [(s.user_id, s.id) for s in everyone] == order
    mine = (await service.list_sessions(app_name=APP, user_id=USER)).sessions
    assert [s.id for s in mine] == ["s1", "s2", "new"]
    for s in everyone:
        assert s.events == []
        assert s.app_name == APP
        full = await got(service, s.id, user=s.user_id)
        assert s == full.model_copy(update={"events": []})
        assert s.state["app:last"] == "a"  # the app state as it is now
    assert [s.last_update_time for s in everyone[:5]] == [5.0, 7.0, 10.0, 10.0, 10.0]
    assert (await service.list_sessions(app_name="nobody")).sessions == []
    assert (await service.list_sessions(app_name=APP, user_id="nobody")).sessions == []


# Cluster hash tags ({...}) in a name must not pin keys to one slot or break a script.
APPS = ["shop", "shop2", "sho", "sh op", "shop/eu", "shöp", "shop:eu", "s" * 100, "a", "a:b",
        "{shop}"]  # fmt: skip
USERS = ["alice", "al ice", "a/b", "ünï", "b:c", "c", "adk:shop:alice", "=x", "u" * 100, "",
         "{alice}", "a\nb"]  # fmt: skip


async def test_list_sessions_keeps_apps_and_users_apart(service: RedsessionSessionService) -> None:
    """Apps whose names are prefixes of others', and names outside [A-Za-z0-9_.@+-]."""
    for i, app in enumerate(APPS):
        for user in USERS[i % 3 :: 2]:  # each app has a different set of users
            await service.create_session(
                app_name=app, user_id=user, session_id=f"{app}|{user}",
                state={"app:name": app, "user:name": user, "own": [app, user]},
            )  # fmt: skip
    for i, app in enumerate(APPS):
        users = USERS[i % 3 :: 2]
        listed = (await service.list_sessions(app_name=app)).sessions
        assert sorted((s.user_id, s.id) for s in listed) == sorted((u, f"{app}|{u}") for u in users)
        for s in listed:
            assert s.app_name == app
            assert s.state == {"app:name": app, "user:name": s.user_id, "own": [app, s.user_id]}
        for user in users:
            (one,) = (await service.list_sessions(app_name=app, user_id=user)).sessions
            assert (one.user_id, one.id) == (user, f"{app}|{user}")
            assert await get(service, one.id, app=app, user=user) == one
        for user in set(USERS) - set(users):
            assert (await service.list_sessions(app_name=app, user_id=user)).sessions == []


# -- state scopes --------------------------------------------------------------------------


async def test_state_scopes(service: RedsessionSessionService) -> None:
    a1 = await service.create_session(app_name=APP, user_id=USER, session_id="a1")
    await service.create_session(app_name=APP, user_id=USER, session_id="a2")
    b1 = await service.create_session(app_name=APP, user_id="bob", session_id="b1")
    x1 = await service.create_session(app_name="other", user_id=USER, session_id="x1")
    done = await service.append_event(
        a1, event(delta={"own": 1, "app:shared": 1, "user:mine": 1, "temp:scratch": 1})
    )
    # temp: is visible to the rest of the invocation, in memory only, and trimmed from the event.
    assert a1.state == {"own": 1, "app:shared": 1, "user:mine": 1, "temp:scratch": 1}
    assert done.actions.state_delta == {"own": 1, "app:shared": 1, "user:mine": 1}

    stored = await got(service, "a1")
    assert stored.state == {"own": 1, "app:shared": 1, "user:mine": 1}
    assert stored.events[0].actions.state_delta == {"own": 1, "app:shared": 1, "user:mine": 1}
    assert (await got(service, "a2")).state == {"app:shared": 1, "user:mine": 1}
    assert (await got(service, "b1", user="bob")).state == {"app:shared": 1}
    assert (await got(service, "x1", app="other")).state == {}
    # A new session sees the shared state at once; writes from others land for all.
    await service.append_event(b1, event(delta={"app:shared": 2, "user:mine": "bob"}))
    await service.append_event(x1, event(delta={"app:shared": "other", "user:mine": "x"}))
    a3 = await service.create_session(app_name=APP, user_id=USER, session_id="a3")
    assert a3.state == {"app:shared": 2, "user:mine": 1}
    assert (await got(service, "a2")).state == {"app:shared": 2, "user:mine": 1}
    assert (await got(service, "b1", user="bob")).state == {"app:shared": 2, "user:mine": "bob"}
    assert (await got(service, "x1", app="other")).state == {
        "app:shared": "other",
        "user:mine": "x",
    }


async def test_none_removes_a_shared_key(service: RedsessionSessionService) -> None:
    """app: and user: state are one field per key, and a None value removes it; session
    state keeps a None value, as ADK's services do."""
    s = await service.create_session(
        app_name=APP, user_id=USER, state={"app:a": 1, "user:u": 1, "app:b": 2, "k": 1}
    )
    await service.append_event(s, event(delta={"app:a": None, "user:u": None, "k": None}))
    assert s.state == {"app:b": 2, "k": None}
    assert await got(service, s.id) == s
    assert await service.get_user_state(app_name=APP, user_id=USER) == {}


async def test_get_user_state(service: RedsessionSessionService) -> None:
    assert await service.get_user_state(app_name=APP, user_id=USER) == {}
    s = await service.create_session(
        app_name=APP, user_id=USER, state={"user:lang": "en", "app:v": 1, "k": 1}
    )
    await service.append_event(s, event(delta={"user:fav": [1, 2], "user:temp:x": 1, "temp:y": 2}))
    # Keys without the prefix; only this user's, of this app.
    assert await service.get_user_state(app_name=APP, user_id=USER) == {
        "lang": "en", "fav": [1, 2], "temp:x": 1
    }  # fmt: skip
    assert await service.get_user_state(app_name=APP, user_id="bob") == {}
    assert await service.get_user_state(app_name="other", user_id=USER) == {}


# -- append_event --------------------------------------------------------------------------


async def test_append_to_unknown_session_raises(service: RedsessionSessionService) -> None:
    ghost = Session(id="ghost", app_name=APP, user_id=USER)
    with pytest.raises(SessionNotFoundError):
        await service.append_event(ghost, event(delta={"user:u": 1, "app:a": 1, "k": 1}))
    gone = await service.create_session(app_name=APP, user_id=USER, session_id="gone")
    await service.delete_session(app_name=APP, user_id=USER, session_id="gone")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(gone, event(delta={"user:u": 1, "app:a": 1}))
    # Another user's session of the same id is not a way in.
    await service.create_session(app_name=APP, user_id="bob", session_id="ghost")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(ghost, event())
    assert await get(service, "ghost") is None
    assert await get(service, "gone") is None
    assert await service.get_user_state(app_name=APP, user_id=USER) == {}
    assert (await got(service, "ghost", user="bob")).state == {}


async def test_partial_event_stores_nothing(service: RedsessionSessionService) -> None:
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1", state={"k": 0})
    before = s.model_copy(deep=True)
    partial = event(partial=True, delta={"k": 1, "app:a": 1, "user:u": 1, "temp:t": 1},
                    content=text("model", "Hel"))  # fmt: skip
    assert await service.append_event(s, partial) is partial
    assert s == before
    assert await got(service, "s1") == before
    assert await service.get_user_state(app_name=APP, user_id=USER) == {}
    fresh = await service.create_session(app_name=APP, user_id="bob")
    assert fresh.state == {}  # no app: key either


async def test_concurrent_user_deltas_all_land(service: RedsessionSessionService) -> None:
    sessions = await asyncio.gather(
        *(service.create_session(app_name=APP, user_id=USER, session_id=f"s{i}") for i in range(50))
    )
    await asyncio.gather(
        *(service.append_event(s, event(delta={f"user:k{i}": i})) for i, s in enumerate(sessions))
    )
    want = {f"k{i}": i for i in range(50)}
    assert await service.get_user_state(app_name=APP, user_id=USER) == want
    assert (await got(service, "s7")).state == {f"user:{k}": v for k, v in want.items()}


async def test_concurrent_app_deltas_all_land(service: RedsessionSessionService) -> None:
    sessions = await asyncio.gather(
        *(service.create_session(app_name=APP, user_id=f"u{i}") for i in range(50))
    )
    await asyncio.gather(
        *(service.append_event(s, event(delta={f"app:k{i}": i})) for i, s in enumerate(sessions))
    )
    want = {f"app:k{i}": i for i in range(50)}
    for s in sessions[:3]:
        assert (await got(service, s.id, user=s.user_id)).state == want


async def test_concurrent_events_in_one_session_all_land(
    service: RedsessionSessionService,
) -> None:
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    events = [event(delta={f"k{i}": i}) for i in range(50)]
    await asyncio.gather(*(service.append_event(s, e) for e in events))
    stored = await got(service, "s1")
    assert sorted(e.id for e in stored.events) == sorted(e.id for e in events)
    assert stored.state == {f"k{i}": i for i in range(50)}


def test_concurrent_first_calls_on_a_cold_cluster_client(redis_cluster: Cluster) -> None:
    """A server's first requests arrive together: none of them may fail."""

    async def first_calls() -> None:
        async with AsyncSessionManager.from_url(redis_cluster.url) as m:
            service = RedsessionSessionService(m)
            await asyncio.gather(
                *(service.create_session(app_name=APP, user_id=f"u{i}") for i in range(50))
            )

    redis_cluster.flush()
    failure = None
    try:
        asyncio.run(first_calls())  # its own loop, closed before the collection below
    except StorageUnavailable as e:
        failure = str(e)  # not the exception: its frames would keep the sockets alive
    gc.collect()
    assert failure is None, failure


def conversation() -> list[Event]:
    """Events of every shape a run produces."""
    call = types.FunctionCall(id="call-1", name="lookup", args={"q": "π", "n": 2**62, "f": 0.1})
    reply = types.FunctionResponse(id="call-1", name="lookup", response={"rows": [[1, None]]})
    return [
        event("user", content=text("user", "héllo ✓"), invocation_id="inv-1"),
        event(
            content=types.Content(
                role="model",
                parts=[
                    types.Part.from_text(text="let me look"),
                    types.Part(function_call=call),
                ],
            ),
            invocation_id="inv-1",
            long_running_tool_ids={"call-1", "b"},
            branch="root.shop",
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=3, candidates_token_count=5, total_token_count=8
            ),
        ),
        event(
            content=types.Content(role="user", parts=[types.Part(function_response=reply)]),
            invocation_id="inv-1",
            delta={
                "found": {"rows": [[1, None]]},
                "app:n": 2**53 + 1,
                "user:x": 0.1 + 0.2,
                "temp:scratch": "gone",
            },
        ),
        event(
            content=types.Content(
                role="model",
                parts=[
                    types.Part.from_bytes(
                        data=b"\x00\xff\x10", mime_type="application/octet-stream"
                    )
                ],
            ),
            invocation_id="inv-1",
            custom_metadata={"trace": ["a", 1]},
            actions=EventActions(
                state_delta={"done": True},
                artifact_delta={"report.txt": 2},
                transfer_to_agent="billing",
                escalate=True,
                skip_summarization=True,
            ),
        ),
        event(id="not an entry id: ünï/1", content=text("model", "bye"), turn_complete=True),
    ]


async def test_events_round_trip(service: RedsessionSessionService) -> None:
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    sent = conversation()
    for e in sent:
        assert await service.append_event(s, e) is e
    stored = await got(service, "s1")
    assert dumps(stored.events) == dumps(sent)
    assert stored.events == sent
    # What was appended to is what is read back, but the temp: keys it keeps in memory.
    s.state.pop("temp:scratch")
    assert stored == s
    assert stored.last_update_time == sent[-1].timestamp
    assert stored.state["app:n"] == 2**53 + 1
    assert stored.state["user:x"] == 0.1 + 0.2


async def test_last_update_time_follows_events(service: RedsessionSessionService) -> None:
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    assert abs(s.last_update_time - time.time()) < 60
    e = event(at=s.last_update_time + 5)
    await service.append_event(s, e)
    assert s.last_update_time == e.timestamp == (await got(service, "s1")).last_update_time


# -- delete --------------------------------------------------------------------------------


async def test_delete_session(service: RedsessionSessionService) -> None:
    s = await service.create_session(
        app_name=APP, user_id=USER, session_id="s1", state={"k": 1, "app:a": 1, "user:u": 1}
    )
    await service.append_event(s, event(delta={"user:v": 2}))
    theirs = await service.create_session(app_name=APP, user_id="bob", session_id="s1")
    await service.delete_session(app_name=APP, user_id=USER, session_id="s1")
    assert await get(service, "s1") is None
    assert (await service.list_sessions(app_name=APP, user_id=USER)).sessions == []
    assert await get(service, "s1", user="bob") == theirs
    # The app's and the user's state outlive the session.
    assert await service.get_user_state(app_name=APP, user_id=USER) == {"u": 1, "v": 2}
    fresh = await service.create_session(app_name=APP, user_id=USER, session_id="s2")
    assert fresh.state == {"app:a": 1, "user:u": 1, "user:v": 2}
    await service.delete_session(app_name=APP, user_id=USER, session_id="never")  # a no-op


async def test_a_deleted_id_can_be_created_again(service: RedsessionSessionService) -> None:
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    await service.append_event(s, event(delta={"k": 1}))
    await service.delete_session(app_name=APP, user_id=USER, session_id="s1")
    again = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    assert again.state == {}
    assert await get(service, "s1") == again


# -- other writers and a real Runner -------------------------------------------------------


async def test_interactions_read_as_events(
    service: RedsessionSessionService, manager: AsyncSessionManager
) -> None:
    key = session_key(APP, USER, "s1")
    await manager.create_session(owner_of(APP, USER), session_id=key)
    asked = await manager.log_interaction(key, user_message="q1", assistant_response="a1")
    await manager.log_interaction(key, user_message="q2")
    s = await got(service, "s1")
    shown = [(e.author, e.content.role, e.content.parts[0].text)
             for e in s.events if e.content and e.content.parts]  # fmt: skip
    assert shown == [("user", "user", "q1"), ("assistant", "model", "a1"), ("user", "user", "q2")]
    assert len({e.id for e in s.events}) == 3
    assert s.events[0].timestamp == asked.timestamp.timestamp() == s.events[1].timestamp
    # ADK continues the conversation in the same history.
    await service.append_event(s, event(content=text("model", "a2")))
    again = await got(service, "s1")
    assert dumps(again.events) == dumps(s.events)
    assert len(await manager.get_history(key)) == 3


class ToolThenText(BaseLlm):
    """A model that calls ``remember`` once, then answers; it keeps every request."""

    model: str = "fake"
    requests: list[LlmRequest] = Field(default_factory=list)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.requests.append(llm_request)
        last = llm_request.contents[-1]
        if any(p.function_response for p in last.parts or []):
            yield LlmResponse(content=text("model", f"noted ({len(self.requests)})"))
        else:
            call = types.Part.from_function_call(name="remember", args={"fact": "blue"})
            yield LlmResponse(content=types.Content(role="model", parts=[call]))


def remember(fact: str, tool_context: ToolContext) -> dict[str, bool]:
    """Remember a fact."""
    tool_context.state["fact"] = fact
    tool_context.state["user:fav"] = fact
    tool_context.state["app:count"] = tool_context.state.get("app:count", 0) + 1
    tool_context.state["temp:scratch"] = "tmp"
    return {"ok": True}


async def test_runner_with_an_offline_model(service: RedsessionSessionService) -> None:
    model = ToolThenText(requests=[])
    agent = LlmAgent(name="assistant", model=model, tools=[remember], output_key="last_reply")
    runner = Runner(app_name=APP, agent=agent, session_service=service)
    await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    yielded: list[Event] = []
    for message in ("my favourite is blue", "again"):
        async for e in runner.run_async(
            user_id=USER, session_id="s1", new_message=text("user", message)
        ):
            yielded.append(e)
    await runner.close()

    s = await got(service, "s1")
    assert [e.author for e in s.events] == ["user", "assistant", "assistant", "assistant"] * 2
    # The runner yields every event but the user's message, each as it was stored.
    assert dumps([e for e in s.events if e.author != "user"]) == dumps(yielded)
    assert s.state == {"fact": "blue", "last_reply": "noted (4)", "user:fav": "blue",
                       "app:count": 2}  # fmt: skip
    assert all("temp:scratch" not in e.actions.state_delta for e in s.events)
    assert await service.get_user_state(app_name=APP, user_id=USER) == {"fav": "blue"}
    # The second turn's first request holds the whole first turn, read back from Redis.
    shown = [p.text for c in model.requests[2].contents for p in c.parts or [] if p.text]
    assert shown == ["my favourite is blue", "noted (2)", "again"]


# -- expiry --------------------------------------------------------------------------------


async def test_get_session_slides_expiry(
    service: RedsessionSessionService, manager: AsyncSessionManager, url: str
) -> None:
    now = [datetime(2030, 1, 1, tzinfo=timezone.utc)]
    manager.core.clock = lambda: now[0]
    ttl = manager.settings.session_ttl
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    await service.append_event(s, event(delta={"k": 1}))
    key = manager.keys.session(session_key(APP, USER, "s1"))

    def ms(t: datetime) -> int:
        return int(t.timestamp() * 1000)

    probe = sync_client(url, Settings())  # a client of its own, whatever the manager's driver

    assert probe.pexpiretime(key) == ms(now[0] + ttl)
    now[0] += timedelta(days=3)
    assert await get(service, "s1") is not None
    assert probe.pexpiretime(key) == ms(now[0] + ttl)
    now[0] += timedelta(days=3)
    cfg = GetSessionConfig(num_recent_events=0)
    assert await get(service, "s1", config=cfg) is not None  # a read without events too
    assert probe.pexpiretime(key) == ms(now[0] + ttl)
    log = manager.keys.log(session_key(APP, USER, "s1"))
    assert probe.pexpiretime(log) == ms(now[0] + ttl)
    probe.close()


# -- the example ---------------------------------------------------------------------------


def test_example_continues_across_processes(tmp_path: Path) -> None:
    def run(message: str) -> str:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), str(tmp_path / "data"), message],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run("my name is Ada")
    assert "model saw user: my name is Ada" in first
    assert "model saw model:" not in first
    second = run("what is my name?")
    seen = [line for line in second.splitlines() if line.startswith("model saw ")]
    assert seen[0] == "model saw user: my name is Ada"
    assert seen[1].startswith("model saw model: ")
    assert seen[-1] == "model saw user: what is my name?"
