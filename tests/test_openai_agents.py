"""RedsessionSession, the OpenAI Agents SDK's Session (redsession/integrations/openai_agents.py).

The Session protocol's contract on a real server, and on a Redis Cluster where a test takes
``backend``; the Runner from threads that each have their own event loop; the compaction hook;
the SDK's own session tests run against the class (tests/sdk/openai_agents_plugin.py); and
examples/openai_agents_chat.py run twice.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import multiprocessing
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import AsyncMock

import orjson
import pytest
import redis
from agents import Agent, RunConfig, Runner, SessionSettings
from agents.memory import OpenAIResponsesCompactionSession, Session
from agents.memory.session import is_openai_responses_compaction_aware_session
from agents.testing import ScriptedModel, assistant_message

from redsession import InvalidSessionId, PayloadTooLarge, PermissionDenied, SessionNotFound
from redsession.integrations.openai_agents import RedsessionSession
from redsession.services.embedded import RedisServer
from redsession.storage.commands import Cmd
from tests.drivers import several_loops_at_once
from tests.topology import Cluster, connected_clients, redis_cluster  # noqa: F401  (the session's cluster)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "openai_agents_chat.py"
PLUGIN_DIR = Path(__file__).resolve().parent / "sdk"

# The SDK whose tests run against RedsessionSession: the version the adapter is built on
# (pyproject's openai-agents extra), its sdist's sha256, and what its two session test
# modules give: 71 tests, 18 of them deselected by the plugin (16 functions, one with three
# parameters), all others passed. A change in any of these is a change to look at.
SDK_VERSION = "0.24.0"
SDK_SHA256 = "4b4b285f4fed81fdf1b4ac426a9101658d9cd29b4fb1aaeee18f639b77e704e3"
SDK_TEST_FILES = ("tests/memory/test_session.py", "tests/memory/test_session_limit.py")
SDK_OUTCOME = {"passed": 53, "deselected": 18}

NO_TRACES = RunConfig(tracing_disabled=True)  # offline: nothing to export traces to
# Items as the SDK writes them, and some it might: nesting, Unicode, big and small numbers,
# a float that must stay a float, and keys in an order that is not sorted.
USER: Any = {"role": "user", "content": [{"type": "input_text", "text": "héllo ✓ 你好 🎉"}]}
CALL: Any = {
    "type": "function_call", "name": "lookup", "arguments": '{"q": "π"}', "call_id": "c1",
    "z": 1, "a": 2.0, "n": 2**62, "neg": -(2**53) - 1, "x": 0.1 + 0.2, "e": 1e-300,
}  # fmt: skip
RESULT: Any = {
    "type": "function_call_output", "call_id": "c1",
    "output": {"rows": [[1, None, True], []], "empty": {}, "deep": {"b": [{}]}},
}  # fmt: skip
ITEMS: list[Any] = [USER, CALL, RESULT, {"role": "assistant", "content": "done"}, {"n": 5}]


def _same(got: list[Any], want: list[Any]) -> None:
    """Equal, and equal as JSON text: key order and number types kept too."""
    assert got == want
    assert orjson.dumps(got) == orjson.dumps(want)


def _text(item: Any) -> str:
    """A message item's text (a string, or the text parts of its content)."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if isinstance(p, dict))


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, redis_server: RedisServer, request: pytest.FixtureRequest) -> str:
    """An emptied server or cluster; the suite started both, so flushing them is ours."""
    if backend == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def single_url(redis_url: str) -> str:
    """For tests that are about event loops or processes, not about the topology."""
    return redis_url


@pytest.fixture
def raw(
    backend: str, url: str, request: pytest.FixtureRequest
) -> Iterator[redis.Redis | redis.RedisCluster]:
    """A sync client on the same backend, to look at keys."""
    client: redis.Redis | redis.RedisCluster
    if backend == "cluster":
        client = request.getfixturevalue("redis_cluster").client(decode_responses=True)
    else:
        client = redis.Redis.from_url(url, decode_responses=True)
    yield client
    client.close()


MakeSession = Callable[..., RedsessionSession]


@pytest.fixture
async def make_session(url: str) -> AsyncIterator[MakeSession]:
    """``make_session(session_id="conv-1", user_id="alice", **settings)``: sessions on their
    own managers (``from_url``), closed at teardown."""
    made: list[RedsessionSession] = []

    def make(session_id: str = "conv-1", user_id: str = "alice", **kw: Any) -> RedsessionSession:
        s = RedsessionSession.from_url(session_id, url, user_id=user_id, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


def _observe_each_command(
    monkeypatch: pytest.MonkeyPatch, s: RedsessionSession, reader: RedsessionSession
) -> list[list[Any]]:
    """After each command ``s`` sends, ``reader`` (its own manager) reads the history."""
    seen: list[list[Any]] = []
    driver = s.manager._driver
    execute = driver._execute

    async def observed(client: Any, cmd: Cmd) -> Any:
        reply = await execute(client, cmd)
        seen.append(await reader.get_items())
        return reply

    monkeypatch.setattr(driver, "_execute", observed)
    return seen


# -- the protocol ---------------------------------------------------------------------------


async def test_it_is_a_session_and_not_a_compaction_aware_one(make_session: MakeSession) -> None:
    s = make_session()
    assert isinstance(s, Session)
    assert not is_openai_responses_compaction_aware_session(s)
    assert s.session_id == "conv-1"
    assert s.session_settings == SessionSettings()  # as the SDK's sessions: never None


async def test_get_items_limits(make_session: MakeSession) -> None:
    s = make_session()
    assert await s.get_items() == []
    await s.add_items(ITEMS[:2])
    await s.add_items(ITEMS[2:])
    _same(await s.get_items(), ITEMS)
    _same(await s.get_items(None), ITEMS)
    assert await s.get_items(0) == []
    assert await s.get_items(-1) == []  # as the SDK's RedisSession (SQLite reads -1 as all)
    _same(await s.get_items(1), ITEMS[-1:])
    _same(await s.get_items(3), ITEMS[-3:])
    _same(await s.get_items(5), ITEMS)
    _same(await s.get_items(7), ITEMS)  # more than there are: all of them
    _same(await s.get_items(2_147_483_647), ITEMS)  # the compaction session's "everything"


@pytest.mark.parametrize("settings", [SessionSettings(limit=2), {"limit": 2}])
async def test_the_session_settings_limit(
    make_session: MakeSession, settings: SessionSettings | dict[str, int]
) -> None:
    s = make_session(session_settings=settings)
    assert s.session_settings == SessionSettings(limit=2)
    await s.add_items(ITEMS)
    _same(await s.get_items(), ITEMS[-2:])
    _same(await s.get_items(4), ITEMS[-4:])  # an explicit limit wins, 0 too
    assert await s.get_items(0) == []
    assert await s.get_items(-3) == []
    # The Runner reads the history with the session's settings: the newest 2.
    model = ScriptedModel([[assistant_message("ok")]])
    await Runner.run(Agent(name="a", model=model), "next", session=s, run_config=NO_TRACES)
    assert model.last_call is not None
    _same(list(model.last_call.input[:2]), ITEMS[-2:])


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"limitt": 1}, "Unknown session settings: limitt"), (5, "SessionSettings instance")],
)
async def test_bad_session_settings_raise_type_error(
    make_session: MakeSession, settings: Any, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        make_session(session_settings=settings)


async def test_items_come_back_as_given(make_session: MakeSession) -> None:
    s = make_session()
    await s.add_items([USER, CALL])
    await s.add_items([RESULT])
    got: list[Any] = await s.get_items()
    _same(got, [USER, CALL, RESULT])
    assert type(got[1]["a"]) is float
    assert type(got[1]["n"]) is int
    assert list(got[1]) == list(CALL)  # key order as given, not sorted
    other = make_session()  # another manager reads the same
    _same(await other.get_items(), [USER, CALL, RESULT])


async def test_pop_item_returns_the_newest_first(
    make_session: MakeSession, raw: redis.Redis
) -> None:
    s = make_session()
    assert await s.pop_item() is None  # a session that does not exist
    assert raw.exists(s.manager.keys.session(s.session_id)) == 0  # and still does not
    await s.add_items(ITEMS)
    for item in reversed(ITEMS):
        _same([await s.pop_item()], [item])
    assert await s.pop_item() is None
    assert await s.get_items() == []


async def test_clear_session_empties_it_but_keeps_the_session(make_session: MakeSession) -> None:
    s = make_session()
    await s.clear_session()  # a session that does not exist: nothing to do
    await s.add_items(ITEMS)
    await s.manager.update_context(s.session_id, {"plan": "pro"}, user_id="alice")
    await s.clear_session()
    assert await s.get_items() == []
    kept = await s.manager.get_session(s.session_id, user_id="alice")
    assert (kept.user_id, kept.context, kept.total_interactions) == ("alice", {"plan": "pro"}, 0)
    await s.add_items([USER])
    _same(await s.get_items(), [USER])


async def test_the_first_add_creates_the_session_for_its_user(make_session: MakeSession) -> None:
    s = make_session("new-conv", user_id="carol")
    assert await s.get_items() == []
    with pytest.raises(SessionNotFound):  # reads did not create it
        await s.manager.get_session("new-conv")
    await s.add_items([])  # nothing to add: nothing created
    with pytest.raises(SessionNotFound):
        await s.manager.get_session("new-conv")
    await s.add_items([USER])
    made = await s.manager.get_session("new-conv")
    assert (made.user_id, made.total_interactions) == ("carol", 1)
    listed = (await s.manager.list_active_sessions("carol")).sessions
    assert [x.session_id for x in listed] == ["new-conv"]


async def test_another_users_session_raises_permission_denied(make_session: MakeSession) -> None:
    alice = make_session("shared-id", user_id="alice")
    await alice.add_items(ITEMS)
    bob = make_session("shared-id", user_id="bob")
    for call in (
        bob.get_items,
        lambda: bob.get_items(2),
        lambda: bob.add_items([USER]),
        bob.pop_item,
        bob.clear_session,
        lambda: bob._atomic_replace_items([USER]),
    ):
        with pytest.raises(PermissionDenied):
            await call()
    _same(await alice.get_items(), ITEMS)  # untouched
    assert (await alice.manager.get_session("shared-id")).user_id == "alice"


async def test_an_interaction_reads_as_two_items(make_session: MakeSession) -> None:
    s = make_session()
    await s.add_items([USER])
    await s.manager.log_interaction(
        s.session_id, user_message="Where is my order?", assistant_response="On its way.",
        user_id="alice",
    )  # fmt: skip
    asked = {"role": "user", "content": "Where is my order?"}
    answered = {"role": "assistant", "content": "On its way."}
    _same(await s.get_items(), [USER, asked, answered])
    _same(await s.get_items(1), [answered])
    _same(await s.get_items(2), [asked, answered])
    # The model is given the logged interaction as the conversation so far.
    model = ScriptedModel([[assistant_message("Tomorrow.")]])
    await Runner.run(Agent(name="a", model=model), "When?", session=s, run_config=NO_TRACES)
    assert model.last_call is not None
    assert [(i.get("role"), _text(i)) for i in model.last_call.input] == [
        ("user", _text(USER)), ("user", "Where is my order?"), ("assistant", "On its way."),
        ("user", "When?"),
    ]  # fmt: skip
    await s.pop_item()
    await s.pop_item()  # the run's two items
    _same([await s.pop_item()], [answered])  # an interaction pops its answer first
    _same(await s.get_items(), [USER, asked])
    _same([await s.pop_item()], [asked])
    _same(await s.get_items(), [USER])


async def test_items_that_are_not_json_raise_type_error_and_change_nothing(
    make_session: MakeSession,
) -> None:
    s = make_session(max_message_bytes=1000)
    await s.add_items(ITEMS)
    # NaN and infinities too: JSON has no such numbers, and redsession rejects them.
    for bad in ({"content": object()}, {"b": b"bytes"}, {"s": {1, 2}}, {"x": float("nan")}):
        with pytest.raises(TypeError):
            await s.add_items([USER, bad])  # all or nothing: USER is not added either
        with pytest.raises(TypeError):
            await s._atomic_replace_items([USER, bad])
    with pytest.raises(PayloadTooLarge):  # a size limit is not a type error
        await s.add_items([{"text": "x" * 2000}])
    _same(await s.get_items(), ITEMS)
    with pytest.raises(InvalidSessionId):  # checked when the session is made
        RedsessionSession("user:42", s.manager, user_id="alice")
    with pytest.raises(InvalidSessionId):
        RedsessionSession("conv-2", s.manager, user_id="not a user id")


async def test_fifty_tasks_adding_at_once_lose_nothing(make_session: MakeSession) -> None:
    s = make_session("busy")  # created by whichever of them comes first
    await asyncio.gather(
        *(s.add_items([{"task": t, "k": 0}, {"task": t, "k": 1}]) for t in range(50))
    )
    items = await s.get_items()
    assert len(items) == 100 == (await s.manager.get_session("busy")).total_interactions
    assert sorted((i["task"], i["k"]) for i in items) == [(t, k) for t in range(50) for k in (0, 1)]
    # One add_items is one step: its two items are never split by another task's.
    assert all(items[j]["task"] == items[j + 1]["task"] for j in range(0, 100, 2))


def _add_from_a_process(url: str, sid: str, k: int, n: int, start: Any) -> None:
    async def add() -> None:
        s = RedsessionSession.from_url(sid, url, user_id="alice")
        try:
            for i in range(n):
                await s.add_items([{"p": k, "i": i}])
        finally:
            await s.close()

    start.wait(60)  # all four begin together
    asyncio.run(add())


@pytest.mark.slow
async def test_four_processes_adding_at_once_lose_nothing(single_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_add_from_a_process, args=(single_url, "multi", k, 100, start))
        for k in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        await asyncio.to_thread(p.join, 60)
    # A child's traceback, if any, is in the captured stderr.
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    s = RedsessionSession.from_url("multi", single_url, user_id="alice")
    try:
        items = await s.get_items()
    finally:
        await s.close()
    assert len(items) == 400
    for k in range(4):  # each process's order kept
        assert [x["i"] for x in items if x["p"] == k] == list(range(100))


# -- event loops ----------------------------------------------------------------------------


THREADS, TURNS = 4, 3


def _run_sync_in_threads(url: str) -> tuple[list[str], dict[tuple[int, int], list[str]]]:
    """Runner.run_sync in THREADS threads at once, each on a loop of its own, all on one
    session: what the session holds then, and what each turn's model was given."""
    session = RedsessionSession.from_url("threads", url, user_id="alice")
    start = threading.Barrier(THREADS)
    given: dict[tuple[int, int], list[str]] = {}

    def worker(k: int) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # run_sync runs on the thread's loop and leaves it open
        try:
            start.wait(30)  # all THREADS at once (a pool thread short would break it)
            for r in range(TURNS):
                model = ScriptedModel([[assistant_message(f"a{k}.{r}")]])
                agent = Agent(name="a", model=model)
                Runner.run_sync(agent, f"q{k}.{r}", session=session, run_config=NO_TRACES)
                assert model.last_call is not None
                given[k, r] = [_text(i) for i in model.last_call.input]
        finally:
            loop.run_until_complete(session.close())  # this loop's client, before the loop goes
            asyncio.set_event_loop(None)
            loop.close()

    with ThreadPoolExecutor(THREADS) as pool:
        for done in [pool.submit(worker, k) for k in range(THREADS)]:
            done.result(60)

    async def read() -> list[str]:
        try:
            return [_text(i) for i in await session.get_items()]
        finally:
            await session.close()

    return asyncio.run(read()), given  # and once more from a loop of the main thread


# Runner.run_sync shuts down async generators on the loop it leaves open for the next run;
# redis-py's BlockingConnectionPool checks each connection out through an asynccontextmanager,
# so each later call on that loop warns (ResourceWarning, ignored by Python's default filters).
@pytest.mark.filterwarnings(
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)
@several_loops_at_once
def test_run_sync_from_threads_that_each_have_their_own_loop(single_url: str) -> None:
    """One session object, made by from_url, used by Runner.run_sync in four threads at once:
    each thread's loop gets its own Redis client (a redis.asyncio client is bound to a loop)."""
    texts, given = _run_sync_in_threads(single_url)
    _collect_quietly()  # the clients of the threads' closed loops
    assert len(texts) == 2 * THREADS * TURNS
    for k in range(THREADS):
        mine = [t for t in texts if t[1:].startswith(f"{k}.")]
        assert mine == [f"{x}{k}.{r}" for r in range(TURNS) for x in "qa"]
        for r in range(TURNS):  # each turn was given the thread's earlier turns, and its own
            assert given[k, r][-1] == f"q{k}.{r}"
            earlier = {f"{x}{k}.{p}" for p in range(r) for x in "qa"}
            assert earlier <= set(given[k, r])


def test_one_session_across_repeated_asyncio_run(single_url: str) -> None:
    """A new loop per call (asyncio.run, as a sync web handler might): each works."""
    session = RedsessionSession.from_url("runs", single_url, user_id="alice")

    async def turn(n: int) -> None:
        try:
            await session.add_items([{"turn": n}])
        finally:
            await session.close()  # closes this loop's client only; the session stays usable

    for n in range(5):
        asyncio.run(turn(n))

    async def read() -> list[Any]:
        try:
            return await session.get_items()
        finally:
            await session.close()

    assert asyncio.run(read()) == [{"turn": n} for n in range(5)]


def _collect_quietly() -> None:
    """Collect now what a test dropped, without the ResourceWarnings of clients whose loops
    closed with their connections open: collected later, in another test, they fail that one
    (filterwarnings = error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _left_open_by_short_lived_loops(url: str, loops: int) -> int:
    """Connections still open after ``loops`` threads each used the session from a new loop
    and closed the loop (as the SDK's own tests wrap run_sync), while the session's first
    loop stays open and then closes it."""
    session = RedsessionSession.from_url("loops", url, user_id="alice")
    home = asyncio.new_event_loop()
    home.run_until_complete(session.add_items([{"home": True}]))

    def turn(n: int) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(session.add_items([{"turn": n}]))
        finally:
            loop.close()

    for n in range(loops):
        t = threading.Thread(target=turn, args=(n,))
        t.start()
        t.join(30)
    home.run_until_complete(session.close())
    home.close()
    gc.collect()  # a client the driver no longer holds goes, with its sockets, here
    return connected_clients(url)


@several_loops_at_once
def test_the_clients_of_closed_loops_are_released(single_url: str) -> None:
    # A loop closed with connections open leaves sockets asyncio can no longer close; only
    # collecting their clients does, with ResourceWarnings: ignored throughout.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        left = _left_open_by_short_lived_loops(single_url, 10)
        gc.collect()
    assert left == 0


def _left_open_after_the_first_loop_closes(url: str) -> int:
    """Connections still open after the session was closed in each loop that used it, where
    the second loop made calls both before and after the first one closed."""
    session = RedsessionSession.from_url("two-loops", url, user_id="alice")
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    first.run_until_complete(session.add_items([{"loop": 1}]))
    second.run_until_complete(session.add_items([{"loop": 2}]))
    first.run_until_complete(session.close())
    first.close()
    second.run_until_complete(session.add_items([{"loop": 2, "again": True}]))
    second.run_until_complete(session.close())
    left = connected_clients(url)
    second.close()
    return left


@several_loops_at_once
def test_closing_the_session_in_each_of_its_loops_closes_every_connection(
    single_url: str,
) -> None:
    left = _left_open_after_the_first_loop_closes(single_url)
    _collect_quietly()
    assert left == 0


# -- expiry ---------------------------------------------------------------------------------


async def test_a_read_slides_the_expiry(
    make_session: MakeSession, raw: redis.Redis | redis.RedisCluster
) -> None:
    """With the manager's clock stopped and moved by hand, the keys' PEXPIRETIME is exactly
    the read's time plus the TTL: an assertion on the server's own record, no sleeping."""
    ttl = timedelta(hours=1)
    s = make_session(session_ttl=ttl)
    # Ahead of the server's clock, so the absolute expiry is in the server's future.
    now = [datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)]
    s.manager.core.clock = lambda: now[0]
    keys = s.manager.keys.session(s.session_id), s.manager.keys.log(s.session_id)

    def expires() -> set[int]:
        return {int(raw.pexpiretime(k)) for k in keys}

    def ms(t: datetime) -> int:
        return int(t.timestamp()) * 1000

    await s.add_items(ITEMS)
    assert expires() == {ms(now[0] + ttl)}
    now[0] += timedelta(minutes=40)
    _same(await s.get_items(), ITEMS)
    assert expires() == {ms(now[0] + ttl)}  # a read alone moved it
    now[0] += timedelta(minutes=40)
    await s.get_items(1)
    assert expires() == {ms(now[0] + ttl)}
    now[0] += timedelta(minutes=40)
    await s._atomic_replace_items([USER])  # a rewrite keeps the expiry a write gives
    assert expires() == {ms(now[0] + ttl)}


# -- compaction -----------------------------------------------------------------------------


async def test_atomic_replace_items_replaces_the_whole_history_in_one_step(
    make_session: MakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, reader = make_session(), make_session()
    await s.add_items(ITEMS)
    seen = _observe_each_command(monkeypatch, s, reader)
    assert await s._atomic_replace_items([USER, {"summary": 1}]) is True
    assert seen
    assert all(seen)  # never empty in between
    _same(seen[-1], [USER, {"summary": 1}])
    # The observer does see the state between two writes: clear, then add (the SDK's
    # fallback for a session without the hook) shows an empty history.
    seen.clear()
    await s.clear_session()
    await s.add_items(ITEMS)
    assert [] in seen
    seen.clear()
    assert await s._atomic_replace_items([]) is True  # nothing: the history is emptied
    assert seen
    assert not any(seen)
    fresh = make_session("compacted-first", user_id="dave")
    assert await fresh._atomic_replace_items([USER]) is True  # before any write: created
    _same(await fresh.get_items(), [USER])
    assert (await fresh.manager.get_session("compacted-first")).user_id == "dave"


async def test_a_concurrent_reader_never_sees_the_history_empty(make_session: MakeSession) -> None:
    s, reader = make_session(), make_session()
    await s.add_items(ITEMS)
    stop, lengths = asyncio.Event(), []

    async def read() -> None:
        while not stop.is_set():
            lengths.append(len(await reader.get_items()))

    task = asyncio.create_task(read())
    for n in range(40):
        await s._atomic_replace_items([USER, {"summary": n}] + [{"pad": i} for i in range(n % 5)])
    stop.set()
    await task
    assert len(lengths) > 20  # the reader did run in between
    assert 0 not in lengths
    assert set(lengths) <= {len(ITEMS), 2, 3, 4, 5, 6}


@pytest.mark.parametrize("automatic", [False, True], ids=["run_compaction", "after_a_run"])
async def test_the_sdks_compaction_session_replaces_the_history_atomically(
    make_session: MakeSession, monkeypatch: pytest.MonkeyPatch, automatic: bool
) -> None:
    """OpenAIResponsesCompactionSession over our session, with a fake client standing in for
    the Responses API's compact endpoint (as the SDK's own tests do)."""
    backend, reader = make_session(), make_session()
    history: list[Any] = [{"role": "user", "content": "original"}]
    summary: list[Any] = [{"role": "user", "content": "summary"}]
    await backend.add_items(history)
    compact = AsyncMock(return_value=SimpleNamespace(usage=None, output=summary))
    session = OpenAIResponsesCompactionSession(
        backend.session_id,
        backend,
        client=cast(Any, SimpleNamespace(responses=SimpleNamespace(compact=compact))),
        compaction_mode="input",
        should_trigger_compaction=lambda _: True,
    )
    seen = _observe_each_command(monkeypatch, backend, reader)
    if automatic:
        model = ScriptedModel([[assistant_message("reply")]])
        await Runner.run(
            Agent(name="a", model=model), "next", session=session, run_config=NO_TRACES
        )
    else:
        await session.run_compaction({"force": True})
    compact.assert_awaited_once()
    assert seen
    assert all(seen)  # never empty in between
    assert seen[-1] == summary == await reader.get_items()


# -- the SDK's own tests --------------------------------------------------------------------


def _sdk_sources(cache: Path) -> Path:
    """The SDK's sdist, extracted under ``cache`` (fetched from PyPI on the first use)."""
    root = cache / f"openai_agents-{SDK_VERSION}"
    if all((root / f).is_file() for f in SDK_TEST_FILES):
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"openai-agents=={SDK_VERSION}", "-d", tmp, "-q", "--disable-pip-version-check"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert got.returncode == 0, f"pip download failed:\n{got.stdout}\n{got.stderr}"
        (archive,) = Path(tmp).glob("*.tar.gz")
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == SDK_SHA256
        out = Path(tmp) / "x"
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.12+ warns without a filter
                tar.extractall(out, filter="data")
            else:
                tar.extractall(out)  # a pinned archive, its hash checked above
        try:
            (out / root.name).rename(root)
        except OSError:  # another run put it there first
            if not root.is_dir():
                raise
    return root


def _outcome(summary: str) -> dict[str, int]:
    """pytest's last line, "53 passed, 18 deselected, 2 warnings in 3.1s", as counts."""
    counts = re.findall(
        r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", summary
    )
    return {("errors" if k == "error" else k): int(n) for n, k in counts}


@pytest.mark.slow
def test_the_sdks_own_session_tests_pass_against_redsession(
    redis_server: RedisServer, request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    cache = getattr(request.config, "cache", None)  # .pytest_cache (not committed), kept
    sdk = _sdk_sources(
        cache.mkdir("openai-agents-sdist") if cache else tmp_path_factory.mktemp("sdist")
    )
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()  # the suite started this server
        evals = int(client.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0))
    # Nothing of ours leaks in: not our tests package, not our settings or pytest options.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDSESSION_", "PYTEST_"))}
    path = os.pathsep.join(p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH")) if p)
    env |= {"PYTHONPATH": path, "REDSESSION_SDK_REDIS_URL": redis_server.url,
            "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *SDK_TEST_FILES, "-p", "openai_agents_plugin",
         "-p", "no:cacheprovider", "-q", "-rfE"],
        cwd=sdk, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert _outcome(lines[-1]) == SDK_OUTCOME, lines[-1]
    with redis.Redis.from_url(redis_server.url) as client:  # it really ran on Redis
        ran = int(client.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0))
        assert ran - evals > 100
        assert client.dbsize() == 0  # the plugin flushed after each test


# -- the example ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_example_continues_its_conversation_in_a_second_process(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def run() -> str:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), str(data)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    first = run()  # starts the server on data/, one turn, stops it
    assert "given 1 input item(s):\n  user: Hello, my name is Ada.\n" in first
    second = run()  # a new process and a new server on the same data
    assert (
        "given 3 input item(s):\n"
        "  user: Hello, my name is Ada.\n"
        "  assistant: (turn 1) The first thing you told me: 'Hello, my name is Ada.'\n"
        "  user: What was the first thing I told you?\n"
    ) in second
    assert "assistant: (turn 2) The first thing you told me: 'Hello, my name is Ada.'" in second
