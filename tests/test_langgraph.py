"""RedsessionSaver against LangGraph's own conformance suite (the PyPI package
langgraph-checkpoint-conformance), and what that suite does not check: the keys a thread
owns, their TTL and slot, exports, dumps and restores, encryption, and O(1) writes."""

from __future__ import annotations

import operator
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import redis
from cryptography.fernet import Fernet
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.graph import END, START, StateGraph

from redsession import AsyncSessionManager, SessionManager, Settings
from redsession.errors import InvalidInput, SessionNotFound
from redsession.integrations.langgraph import RedsessionSaver, session_for
from redsession.storage import scripts
from redsession.storage.connection import sync_client
from redsession.storage.keys import Keys
from tests.conftest import after_each_command, is_script

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "langgraph_resume.py"
# The optional capabilities RedsessionSaver implements: their extended tests must pass too.
IMPLEMENTED = {"copy_thread"}


@pytest.fixture
async def manager(url: str) -> AsyncIterator[AsyncSessionManager]:
    m = AsyncSessionManager.from_url(url)
    yield m
    await m.close()


async def test_conformance(manager: AsyncSessionManager) -> None:
    @checkpointer_test(name="RedsessionSaver")
    async def saver() -> AsyncIterator[RedsessionSaver]:
        yield RedsessionSaver(manager)

    failures: list[str] = []

    def result(capability: str, test: str, passed: bool, error: str | None) -> None:
        if not passed:
            failures.append(f"{capability}/{test}: {error}")

    report = await validate(saver, progress=ProgressCallbacks(on_test_result=result))
    report.print_report()
    assert failures == []
    assert report.passed_all_base()
    ran: dict[str, Any] = {name: r for name, r in report.results.items() if r.detected}
    for name in IMPLEMENTED:
        assert ran[name].passed is True, name
        assert ran[name].tests_passed > 0, name
    assert report.passed_all()


# -- what the conformance suite does not see -------------------------------------------------



class Count(TypedDict):
    steps: Annotated[list[str], operator.add]


def counting_graph(saver: RedsessionSaver) -> Any:
    g = StateGraph(Count)
    g.add_node("a", lambda s: {"steps": ["a"]})
    g.add_node("b", lambda s: {"steps": ["b"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", END)
    return g.compile(checkpointer=saver)


def thread(tid: str, **extra: str) -> Any:
    return {"configurable": {"thread_id": tid, **extra}}


async def test_a_thread_is_a_session_whose_keys_share_slot_and_expiry(
    manager: AsyncSessionManager, url: str
) -> None:
    saver = RedsessionSaver(manager)
    graph = counting_graph(saver)
    await graph.ainvoke({"steps": []}, thread("t-1", user_id="alice"))
    await graph.ainvoke({"steps": []}, thread("t-1"))
    # The thread is a redsession session of the configured user, scoped to LangGraph.
    s = await manager.get_session("t-1", history=0)
    assert s.user_id == "alice"
    assert s.scope == {"framework": "langgraph", "thread_id": "t-1"}
    assert [x.session_id for x in (await manager.list_active_sessions("alice")).sessions] == [
        "t-1"
    ]
    client = sync_client(url, Settings())
    try:
        keys = Keys()
        owned = [k for k in keys.session_keys("t-1") if client.exists(k)]
        side, index = keys.side("t-1")
        assert side in owned
        assert index in owned
        if isinstance(client, redis.RedisCluster):
            assert len({client.keyslot(k) for k in owned}) == 1
        expiries = {client.pexpiretime(k) for k in owned}
        assert len(expiries) == 1
        assert expiries.pop() > 0
        # No key of any session is left without a TTL (the global indexes have none by design).
        for k in client.scan_iter(match=f"{keys.prefix}:s:*", count=1000):
            assert client.pttl(k) > 0, k
    finally:
        client.close()
    # Deleting the session takes its checkpoints with it.
    await manager.delete_session("t-1")
    assert await saver.aget_tuple(thread("t-1")) is None


async def test_thread_ids_that_are_not_session_ids_map_to_one(
    manager: AsyncSessionManager,
) -> None:
    saver = RedsessionSaver(manager)
    graph = counting_graph(saver)
    tid = "user:42/chat {main}"
    out = await graph.ainvoke({"steps": []}, thread(tid))
    assert out == {"steps": ["a", "b"]}
    sid = session_for(tid)
    assert sid.startswith("lg-")
    s = await manager.get_session(sid, history=0)
    assert s.user_id == "langgraph"
    assert s.scope == {"framework": "langgraph", "thread_id": tid}
    state = await graph.aget_state(thread(tid))
    assert state.values == {"steps": ["a", "b"]}
    assert state.config["configurable"]["thread_id"] == tid


async def _ran_graph(saver: RedsessionSaver) -> tuple[list[Any], Any]:
    graph = counting_graph(saver)
    await graph.ainvoke({"steps": []}, thread("t-x"))
    await graph.ainvoke({"steps": ["again"]}, thread("t-x"))
    history = [s async for s in graph.aget_state_history(thread("t-x"))]
    return history, graph


def _shape(history: list[Any]) -> list[tuple[Any, ...]]:
    return [(s.values, s.next, s.config["configurable"]["checkpoint_id"]) for s in history]


async def test_export_and_import_keep_checkpoints(url: str) -> None:
    async with AsyncSessionManager.from_url(url) as m:
        saver = RedsessionSaver(m)
        history, _ = await _ran_graph(saver)
        doc = await m.export_session("t-x")
        assert doc.side is not None
        assert doc.side.fields
        flush(url)
        assert await saver.aget_tuple(thread("t-x")) is None
        await m.import_session_data(doc.model_dump_json())
        again = [s async for s in counting_graph(saver).aget_state_history(thread("t-x"))]
        assert _shape(again) == _shape(history)
        assert (await m.export_session("t-x")) == doc


async def test_an_export_with_bad_side_data_is_refused_whole(
    manager: AsyncSessionManager,
) -> None:
    saver = RedsessionSaver(manager)
    await _ran_graph(saver)
    doc = (await manager.export_session("t-x")).model_dump(mode="json")
    doc["session"]["session_id"] = "t-y"
    field = next(iter(doc["side"]["fields"]))
    doc["side"]["fields"][field] = "not base64!"
    with pytest.raises(InvalidInput, match="not base64"):
        await manager.import_session_data(doc)
    with pytest.raises(SessionNotFound):
        await manager.get_session("t-y")


async def test_dump_and_restore_keep_checkpoints(redis_url: str, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    async with AsyncSessionManager.from_url(redis_url, encryption_keys=[key]) as m:
        saver = RedsessionSaver(m)
        history, _ = await _ran_graph(saver)
        # Sealed at rest: every side value is a Fernet token, none holds the state's text.
        with redis.Redis.from_url(redis_url) as client:
            values = client.hvals(Keys().side("t-x")[0])
        assert values
        assert all(v.startswith(b"gAAAA") for v in values)
        assert not any(b"again" in v for v in values)
        report = await m.dump_sessions(tmp_path)
        assert report.written == 1
        flush(redis_url)
        await m.restore_sessions(tmp_path / "sessions")
        again = [s async for s in counting_graph(saver).aget_state_history(thread("t-x"))]
        assert _shape(again) == _shape(history)


async def test_rotate_keys_reseals_checkpoints(redis_url: str) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    async with AsyncSessionManager.from_url(redis_url, encryption_keys=[old]) as m:
        history, _ = await _ran_graph(RedsessionSaver(m))
    async with AsyncSessionManager.from_url(redis_url, encryption_keys=[new, old]) as m:
        report = await m.rotate_keys()
        assert report.sessions_rotated == 1
    async with AsyncSessionManager.from_url(redis_url, encryption_keys=[new]) as m:
        graph = counting_graph(RedsessionSaver(m))
        again = [s async for s in graph.aget_state_history(thread("t-x"))]
        assert _shape(again) == _shape(history)


def test_the_sync_api_works_from_plain_code(redis_url: str) -> None:
    saver = RedsessionSaver(AsyncSessionManager.from_url(redis_url))
    try:
        graph = counting_graph(saver)
        assert graph.invoke({"steps": []}, thread("t-sync")) == {"steps": ["a", "b"]}
        assert graph.get_state(thread("t-sync")).values == {"steps": ["a", "b"]}
        assert len(list(saver.list(thread("t-sync")))) == 4
        saver.delete_thread("t-sync")
        assert saver.get_tuple(thread("t-sync")) is None
    finally:
        saver.close()


def flush(url: str) -> None:
    client = sync_client(url, Settings())
    try:
        client.flushall()
    finally:
        client.close()


# -- growth: aput and aget_tuple cost the same at 10 and at 10,000 checkpoints ----------------


def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k: v["calls"] for k, v in stats.items()}


async def test_aput_and_aget_tuple_run_the_same_commands_at_10_and_10000(
    redis_url: str,
) -> None:
    """Counted by the server (commands run inside scripts included), not timed."""
    async with AsyncSessionManager.from_url(redis_url) as m:
        saver = RedsessionSaver(m)
        client = redis.Redis.from_url(redis_url)
        counts = {}
        try:
            parent = None
            made = 0
            await saver.aget_tuple(thread("grow"))  # loads its script (SCRIPT LOAD once)
            for target in (10, 10_000):
                while made < target - 1:
                    _, parent = await _put(saver, parent, made)
                    made += 1
                client.config_resetstat()
                _, parent = await _put(saver, parent, made)
                made += 1
                put = _commands(client)
                client.config_resetstat()
                tup = await saver.aget_tuple(thread("grow"))
                get = _commands(client)
                assert tup is not None
                assert tup.checkpoint["channel_values"] == {"n": made - 1}
                counts[target] = (put, get)
        finally:
            client.close()
    assert counts[10] == counts[10_000]
    put, get = counts[10]
    print(f"aput + aput_writes: {put}; aget_tuple: {get}")
    assert put["cmdstat_fcall"] == 2  # aput and aput_writes: one script each
    assert get["cmdstat_fcall"] == 1  # aget_tuple: one script and one HMGET of blobs
    assert get["cmdstat_hmget"] == 3  # the owner check, its writes, and its blobs


async def _put(saver: RedsessionSaver, parent: str | None, n: int) -> tuple[Any, str]:
    c = empty_checkpoint()
    c["channel_values"] = {"n": n}
    c["channel_versions"] = {"n": saver.get_next_version(None if n == 0 else str(n), None)}
    conf = thread("grow", checkpoint_ns="")
    if parent:
        conf["configurable"]["checkpoint_id"] = parent
    cfg = await saver.aput(conf, c, {"step": n}, c["channel_versions"])
    await saver.aput_writes(cfg, [("n", n)], task_id="t")
    return cfg, cfg["configurable"]["checkpoint_id"]


# -- the example: interrupted, the process gone, resumed by another ----------------------


def test_example_resumes_in_a_new_process_from_the_checkpoint(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), str(tmp_path / "data"), *args],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run("start", "a haiku about Redis")
    assert "node draft: the model wrote" in first
    assert "interrupted: waiting for {'approve':" in first
    assert "node publish" not in first
    second = run("resume", "yes")
    assert "node draft" not in second  # the draft came from the checkpoint, not the model
    assert "node review: the human answered 'yes'" in second
    assert "node publish: 'Keys in one slot" in second
    assert second.rstrip().endswith("'approved: yes', 'published']")


def test_rotation_racing_a_checkpoint_write_keeps_it(
    make_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    writer = make_manager(encryption_keys=[old])
    writer.put_checkpoint("t-r", "", "0001", b"first", [("ch", "1", b"v1")], create_for="u")
    rotator = make_manager(encryption_keys=[new, old])
    raced = []

    def hook(cmd: Any) -> None:  # right after rotation has read the session, once
        if is_script(cmd, scripts.FETCH) and not raced:
            raced.append(1)
            writer.put_checkpoint("t-r", "", "0002", b"second", [], create_for="u")

    after_each_command(monkeypatch, rotator, hook)
    assert rotator.rotate_keys().sessions_rotated == 1
    assert raced == [1]
    rows, _ = rotator.list_checkpoints("t-r", "")
    assert [(r.checkpoint_id, r.payload) for r in rows] == [("0002", b"second"), ("0001", b"first")]
    assert rotator.get_checkpoint_blobs("t-r", "", [("ch", "1")]) == [b"v1"]
    assert all(rotator.core.cipher.is_current(v) for v in _side_values(rotator, "t-r"))


def _side_values(m: Any, sid: str) -> list[bytes]:
    return list(m.client.hvals(m.keys.side(sid)[0]))


def test_each_side_write_is_one_event_and_a_merge_drops_the_secondarys(url: str) -> None:
    m = SessionManager(sync_client(url, Settings()), Settings())
    try:
        m.put_checkpoint("t-a", "", "0001", b"a", create_for="u")
        m.put_checkpoint("t-b", "", "0001", b"b", create_for="u")
        m.put_checkpoint_writes("t-b", "", "0001", [("k", b"w", False)], create_for="u")
        events = [
            (e[b"kind"], e[b"sid"]) for _, e in m.client.xrange(m.keys.events, "-", "+")
        ]
        assert events == [
            (b"create", b"t-a"), (b"side", b"t-a"),
            (b"create", b"t-b"), (b"side", b"t-b"), (b"side", b"t-b"),
        ]  # fmt: skip
        m.merge_sessions("t-a", "t-b")
        assert not any(m.client.exists(k) for k in m.keys.session_keys("t-b")[:2])
        assert not any(m.client.exists(k) for k in m.keys.side("t-b"))
        row = m.get_checkpoint("t-a", "")
        assert row is not None
        assert row.payload == b"a"
        assert m.get_checkpoint("t-b", "") is None
    finally:
        m.close()


async def test_alist_without_a_config_lists_every_thread_by_its_own_id(
    manager: AsyncSessionManager,
) -> None:
    saver = RedsessionSaver(manager)
    graph = counting_graph(saver)
    for tid in ("plain-1", "user:7 / chat"):
        await graph.ainvoke({"steps": []}, thread(tid))
    await manager.create_session("bob", session_id="no-checkpoints")
    found = [t.config["configurable"]["thread_id"] async for t in saver.alist(None)]
    assert sorted(set(found)) == ["plain-1", "user:7 / chat"]
    assert len(found) == 8  # four checkpoints a run: input, then each of three steps
    assert len([t async for t in saver.alist(None, limit=3)]) == 3
    step2 = [t.metadata["step"] async for t in saver.alist(None, filter={"step": 2})]
    assert step2 == [2, 2]
