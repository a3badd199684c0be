"""The item history: framework items beside interactions, in one history per session.

Every test runs on one server and on a 3-primary Redis Cluster.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from redsession import (
    InvalidInput,
    PayloadTooLarge,
    PermissionDenied,
    RevisionConflict,
    SessionManager,
    SessionMerged,
    SessionNotFound,
    Settings,
)
from redsession.model.models import Interaction, Item
from redsession.storage.connection import sync_client
from redsession.storage.keys import Keys

K = Keys()
# Items as frameworks write them: nesting, Unicode, big and small numbers, a key order that
# is not sorted, and a float that must not become an int.
TOOL_CALL = {"type": "function_call", "name": "lookup", "arguments": '{"q": "π"}',
             "call_id": "c1", "z": 1, "a": 2.0, "n": 2**62, "x": 0.1 + 0.2}  # fmt: skip
USER = {"role": "user", "content": [{"type": "input_text", "text": "héllo ✓"}]}
RESULT = {"type": "function_call_output", "call_id": "c1", "output": {"rows": [[1, None]]}}


@pytest.fixture
def m(url: str, tmp_path: Path) -> Iterator[SessionManager]:
    s = Settings(data_dir=tmp_path / "data")
    with SessionManager(sync_client(url, s), s) as manager:
        yield manager


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Equal, and equal as JSON text: key order and number types kept too."""
    assert got == want
    assert orjson.dumps(got) == orjson.dumps(want)


def test_items_come_back_as_given(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    added = m.append_items(sid, [USER, TOOL_CALL], user_id="alice")
    assert [type(i) for i in added] == [Item, Item]
    assert added[0].timestamp < added[1].timestamp  # distinct times keep their order
    m.append_items(sid, [RESULT])
    _same(m.get_items(sid), [USER, TOOL_CALL, RESULT])
    s = m.get_session(sid)
    assert s.total_interactions == 3 == m.client.llen(K.log(sid))


def test_an_interaction_reads_as_two_items(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    m.append_items(sid, [USER])
    m.log_interaction(sid, user_message="q", assistant_response="a", topics=["t"])
    m.log_interaction(sid, user_message="unanswered")
    m.append_items(sid, [TOOL_CALL])
    user, answer = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    last = {"role": "user", "content": "unanswered"}
    _same(m.get_items(sid), [USER, user, answer, last, TOOL_CALL])
    # One history: resume, export and the records all hold the four entries in order.
    history = m.resume_session(sid, "alice").history
    assert [type(e) for e in history] == [Item, Interaction, Interaction, Item]
    assert [i.user_message for i in m.resume_session(sid, "alice").interactions] == [
        "q", "unanswered"
    ]  # fmt: skip
    assert m.get_session(sid).total_interactions == 4 == m.client.llen(K.log(sid))


@pytest.mark.parametrize(
    ("limit", "count"),
    [(None, 5), (0, 0), (-1, 0), (-100, 0), (1, 1), (2, 2), (4, 4), (5, 5), (6, 5), (99, 5)],
)
def test_get_items_limit(m: SessionManager, limit: int | None, count: int) -> None:
    sid = m.create_session("alice").session_id
    m.append_items(sid, [USER, TOOL_CALL])
    m.log_interaction(sid, user_message="q", assistant_response="a")
    m.append_items(sid, [RESULT])
    everything = m.get_items(sid)
    assert len(everything) == 5
    got = m.get_items(sid, limit=limit)
    assert got == (everything[len(everything) - count :] if count else [])


def test_pop_takes_the_newest_item_and_splits_an_interaction(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    assert m.pop_item(sid) is None  # an empty history
    m.log_interaction(sid, user_message="q", assistant_response="a")
    m.append_items(sid, [USER, TOOL_CALL])
    assert m.pop_item(sid) == TOOL_CALL
    assert m.pop_item(sid) == USER
    # The newest item of an interaction is the answer; the question stays behind.
    assert m.pop_item(sid) == {"role": "assistant", "content": "a"}
    (left,) = m.get_history(sid)
    assert isinstance(left, Interaction)
    assert (left.user_message, left.assistant_response) == ("q", None)
    assert m.pop_item(sid) == {"role": "user", "content": "q"}
    assert m.pop_item(sid) is None
    assert m.get_session(sid).total_interactions == 0


def test_clear_keeps_the_session_and_replace_is_atomic(m: SessionManager) -> None:
    sid = m.create_session("alice", context={"plan": "pro"}).session_id
    m.log_interaction(sid, user_message="q", topics=["billing"])
    m.append_items(sid, [USER, TOOL_CALL])
    m.replace_history(sid, [RESULT, USER])
    _same(m.get_items(sid), [RESULT, USER])
    assert m.get_session(sid).total_interactions == 2
    m.clear_history(sid)
    s = m.get_session(sid)
    assert (s.history, s.total_interactions, s.context, s.topics) == ([], 0, {"plan": "pro"},
                                                                      ["billing"])  # fmt: skip
    assert m.get_items(sid) == []
    m.append_items(sid, [USER])
    _same(m.get_items(sid), [USER])


def test_history_since_a_time(m: SessionManager) -> None:
    now = [datetime(2030, 1, 1, tzinfo=timezone.utc)]
    m.core.clock = lambda: now[0]
    sid = m.create_session("alice").session_id
    for n in range(200):  # more than one page of the backwards read
        now[0] += timedelta(seconds=1)
        if n % 2:
            m.append_items(sid, [{"n": n}])
        else:
            m.log_interaction(sid, user_message=str(n))
    cut = datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=150)
    got = m.history_since(sid, cut)
    assert [e.timestamp for e in got] == [cut + timedelta(seconds=n) for n in range(51)]
    assert m.history_since(sid, now[0] + timedelta(seconds=1)) == []
    assert len(m.history_since(sid, cut - timedelta(days=1))) == 200
    with pytest.raises(InvalidInput, match="timezone-aware"):
        m.history_since(sid, datetime(2030, 1, 1))


def test_an_entry_behind_one_stamped_by_a_slow_clock_is_still_found(m: SessionManager) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    now = [t0]
    m.core.clock = lambda: now[0]
    sid = m.create_session("alice").session_id
    m.append_items(sid, [{"n": 1}])
    now[0] = t0 - timedelta(seconds=2)  # another instance, its clock 2 s behind, appends next
    m.append_items(sid, [{"n": 2}])
    # The read goes back past n=2 (older than asked for, but within the clock-skew margin).
    found = m.history_since(sid, t0 - timedelta(seconds=1))
    assert [e.item for e in found if isinstance(e, Item)] == [{"n": 1}]


def test_a_first_write_creates_the_session_for_its_user(m: SessionManager) -> None:
    m.append_items("fresh-1", [USER], create_for="alice", user_id="alice")
    s = m.get_session("fresh-1")
    assert (s.user_id, s.total_interactions) == ("alice", 1)
    assert [x.session_id for x in m.list_active_sessions("alice").sessions] == ["fresh-1"]
    with pytest.raises(PermissionDenied):  # someone else's: never created over, never read
        m.append_items("fresh-1", [USER], create_for="bob", user_id="bob")
    with pytest.raises(SessionNotFound):  # without create_for a missing session stays missing
        m.append_items("fresh-2", [USER])
    m.delete_session("fresh-1")
    with pytest.raises(SessionNotFound, match="deleted"):  # a tombstone is never resurrected
        m.append_items("fresh-1", [USER], create_for="alice", user_id="alice")


def test_items_belong_to_the_owner_only(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    m.append_items(sid, [USER])
    for call in (
        lambda: m.append_items(sid, [USER], user_id="bob"),
        lambda: m.get_items(sid, user_id="bob"),
        lambda: m.pop_item(sid, user_id="bob"),
        lambda: m.replace_history(sid, [], user_id="bob"),
        lambda: m.clear_history(sid, user_id="bob"),
        lambda: m.history_since(sid, datetime(2000, 1, 1, tzinfo=timezone.utc), user_id="bob"),
    ):
        with pytest.raises(PermissionDenied, match="not found or expired"):
            call()
    _same(m.get_items(sid), [USER])


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ("not a list", InvalidInput),
        ({"role": "user"}, InvalidInput),
        ([["a list"]], InvalidInput),
        ([{"bad": float("nan")}], InvalidInput),
        ([{"big": 2**70}], InvalidInput),
        ([{"s": "\ud800"}], InvalidInput),
        ([{1: "non-string key"}], InvalidInput),
        ([{"d": {"d": {"d": {"d": {}}}}}], PayloadTooLarge),
        ([{"m": "x" * 2000}], PayloadTooLarge),
    ],
)
def test_bad_items_are_refused_and_nothing_is_written(
    url: str, tmp_path: Path, items: Any, error: type[Exception]
) -> None:
    s = Settings(max_json_depth=3, max_message_bytes=1000)
    with SessionManager(sync_client(url, s), s) as m:
        sid = m.create_session("alice").session_id
        m.append_items(sid, [USER])
        with pytest.raises(error):
            m.append_items(sid, [RESULT, *items] if isinstance(items, list) else items)
        with pytest.raises(error):
            m.replace_history(sid, items)
        _same(m.get_items(sid), [USER])


def test_bad_ids_are_refused(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    for ids in (["a", "a"], ["a b", "c"], ["x"], "ab", [1, 2]):
        with pytest.raises(InvalidInput):
            m.append_items(sid, [USER, RESULT], ids=ids)  # type: ignore[arg-type]
    assert [i.id for i in m.append_items(sid, [USER, RESULT], ids=["u1", "r-1"])] == ["u1", "r-1"]
    assert [e.id for e in m.get_history(sid)] == ["u1", "r-1"]


def test_every_key_keeps_one_ttl_and_reads_slide_it(m: SessionManager) -> None:
    now = [datetime.now(timezone.utc)]
    m.core.clock = lambda: now[0]
    sid = m.create_session("alice").session_id
    m.append_items(sid, [USER])
    first = m.client.pexpiretime(K.session(sid))
    assert m.client.pexpiretime(K.log(sid)) == first
    now[0] += timedelta(hours=1)
    m.get_items(sid)  # a framework's read counts as activity
    later = m.client.pexpiretime(K.session(sid))
    assert later == m.client.pexpiretime(K.log(sid))
    assert later - first == 3_600_000
    now[0] += timedelta(hours=1)
    m.get_items(sid, touch=False)
    assert m.client.pexpiretime(K.session(sid)) == later


def test_export_import_dump_and_restore_carry_items(m: SessionManager) -> None:
    sid = m.create_session("alice", context={"k": 1}).session_id
    m.append_items(sid, [USER, TOOL_CALL])
    m.log_interaction(sid, user_message="q", assistant_response="a", metadata={"x": 0.5})
    doc = m.export_session_data(sid)
    assert doc["version"] == 2
    assert [e["kind"] for e in doc["history"]] == ["item", "item", "interaction"]
    assert m.dump_sessions().written == 1
    m.delete_session(sid)  # and then Redis loses everything (tombstones too)
    _flush(m)
    assert m.restore_sessions().restored == 1
    assert m.export_session_data(sid) == doc
    _flush(m)
    m.import_session_data(doc)
    assert m.export_session_data(sid) == doc
    _same(m.get_items(sid)[:2], [USER, TOOL_CALL])


def test_a_version_1_document_still_imports(m: SessionManager) -> None:
    v1 = {
        "format": "redsession.session", "version": 1,
        "session": {"session_id": "old-1", "user_id": "alice",
                    "created_at": "2030-01-01T00:00:00Z", "last_activity": "2030-01-01T00:00:00Z",
                    "total_interactions": 1},
        "interactions": [{"id": "i1", "timestamp": "2030-01-01T02:00:00+02:00",
                          "user_message": "hi"}],
        "expires_at": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat(),
    }  # fmt: skip
    assert m.import_session_data(v1) == "old-1"
    doc = m.export_session_data("old-1")
    assert doc["version"] == 2
    # Stored and read back in UTC, whatever zone the document used.
    assert doc["history"] == [{
        "kind": "interaction", "id": "i1", "timestamp": "2030-01-01T00:00:00Z",
        "user_message": "hi", "assistant_response": None, "metadata": {}, "topics": [],
    }]  # fmt: skip


def test_merge_interleaves_items_and_interactions_by_time(m: SessionManager) -> None:
    t = [datetime(2030, 1, 1, tzinfo=timezone.utc)]
    m.core.clock = lambda: t[0]
    a = m.create_session("alice").session_id
    b = m.create_session("alice").session_id
    for n in range(4):
        t[0] += timedelta(seconds=1)
        m.append_items(a if n % 2 == 0 else b, [{"n": n}])
        t[0] += timedelta(seconds=1)
        m.log_interaction(b if n % 2 == 0 else a, user_message=str(n))
    t[0] += timedelta(seconds=1)
    m.append_items(b, [{"dup": True}], ids=["same"])
    m.append_items(a, [{"primary's": True}], ids=["same"])
    merged = m.merge_sessions(a, b)
    history = m.get_history(a)
    times = [e.timestamp for e in history]
    assert times == sorted(times)
    assert len(history) == 9 == merged.total_interactions  # 4 + 4 + the shared id once
    assert {"primary's": True} in m.get_items(a)
    with pytest.raises(SessionMerged):
        m.append_items(b, [USER])
    _same(m.get_items(b)[-1:], [{"primary's": True}])  # a merged id reads its primary


def _flush(m: SessionManager) -> None:
    if isinstance(m.client, redis.RedisCluster):
        m.client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    else:
        m.client.flushall()


def _append_many(url: str, sid: str, k: int, n: int) -> None:
    with SessionManager.from_url(url) as m:
        for i in range(n):
            m.append_items(sid, [{"p": k, "i": i}, {"p": k, "i": i, "second": True}])


@pytest.mark.slow
def test_eight_processes_lose_no_appends(m: SessionManager, url: str) -> None:
    sid = m.create_session("alice").session_id
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(url, sid, k, 100)) for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    items = m.get_items(sid)
    assert len(items) == 1600 == m.get_session(sid).total_interactions
    for k in range(8):  # each process's order kept, each pair adjacent
        mine = [x for x in items if x["p"] == k]
        assert [x["i"] for x in mine] == [i for i in range(100) for _ in (0, 1)]
    pairs = [(items[j], items[j + 1]) for j in range(0, 1600, 2)]
    assert all(x["i"] == y["i"] and x["p"] == y["p"] and y.get("second") for x, y in pairs)


def test_items_are_encrypted_at_rest(url: str) -> None:
    from cryptography.fernet import Fernet

    s = Settings(encryption_keys=[Fernet.generate_key().decode()])
    with SessionManager(sync_client(url, s), s) as m:
        sid = m.create_session("alice").session_id
        secret = {"role": "user", "content": "my card is 4111"}
        m.append_items(sid, [secret])
        (raw,) = m.client.lrange(K.log(sid), 0, -1)
        head = orjson.loads(raw)  # time, id and kind in the clear; the rest sealed
        assert head["kind"] == "item"
        assert head["sealed"].startswith("gAAAAA")
        assert b"4111" not in raw
        _same(m.get_items(sid), [secret])
        m.rotate_keys()  # already current: nothing to do, and the item still reads
        _same(m.get_items(sid), [secret])


def test_session_state_is_set_with_the_items_it_belongs_to(m: SessionManager) -> None:
    s = m.create_session("alice", state={"step": 1, "cart": {"n": 2}}, scope={"app": "shop"})
    assert (s.state, s.scope) == ({"step": 1, "cart": {"n": 2}}, {"app": "shop"})
    m.append_items(s.session_id, [USER], state={"step": 2, "seen": None})
    got = m.get_session(s.session_id)
    assert got.state == {"step": 2, "cart": {"n": 2}, "seen": None}  # set key by key
    assert got.scope == {"app": "shop"}
    doc = m.export_session_data(s.session_id)
    assert doc["session"]["state"] == got.state
    _flush(m)
    m.import_session_data(doc)
    assert m.get_session(s.session_id).state == got.state
    # A first write can create the session with its scope and state.
    m.append_items("new-1", [USER], create_for="bob", scope={"app": "x"}, state={"a": 1})
    assert (m.get_session("new-1").scope, m.get_session("new-1").state) == ({"app": "x"},
                                                                             {"a": 1})  # fmt: skip
    # A merge keeps the primary's value of a key both sides set.
    p = m.create_session("carol", state={"k": "primary", "p": 1}).session_id
    q = m.create_session("carol", state={"k": "secondary", "q": 2}).session_id
    assert m.merge_sessions(p, q).state == {"k": "primary", "p": 1, "q": 2}


def test_users_are_listed_by_name_prefix(m: SessionManager) -> None:
    for uid in ("adk:shop:bob", "adk:shop:amy", "adk:shopping:zed", "adk:bank:eve", "plain"):
        m.create_session(uid)
    page = m.list_users("adk:shop:", limit=1)
    assert page.users == ["adk:shop:amy"]
    assert m.list_users("adk:shop:", limit=1, cursor=page.next_cursor).users == ["adk:shop:bob"]
    assert m.list_users("adk:shop:", limit=5).users == ["adk:shop:amy", "adk:shop:bob"]
    assert len(m.list_users().users) == 5
    (only,) = [x.session_id for x in m.list_active_sessions("adk:shop:amy").sessions]
    m.delete_session(only)  # amy's last session: she leaves the listing
    assert m.list_users("adk:shop:").users == ["adk:shop:bob"]
    with pytest.raises(InvalidInput):
        m.list_users("bad prefix")


# -- revisions: a compare-and-set in the write's own script ---------------------------------


def test_a_revision_check_refuses_a_stale_write_and_writes_nothing(m: SessionManager) -> None:
    sid = "rev-1"
    m.append_items(sid, [USER], create_for="alice", revision=(None, "r1"))
    assert m.get_session(sid).revision == "r1"
    with pytest.raises(RevisionConflict):  # it exists now
        m.append_items(sid, [USER], create_for="alice", revision=(None, "r2"))
    m.append_items(sid, [RESULT], state={"k": 1}, revision=("r1", "r2"))
    with pytest.raises(RevisionConflict):
        m.append_items(sid, [TOOL_CALL], state={"k": 2}, revision=("r1", "r3"))
    s = m.get_session(sid, history=10)
    assert (s.revision, s.state, s.total_interactions) == ("r2", {"k": 1}, 2)
    # With no items, the check still runs and the state and revision move.
    m.append_items(sid, [], state={"k": 3}, revision=("r2", "r3"))
    assert (m.get_session(sid).revision, m.get_session(sid).state) == ("r3", {"k": 3})
    with pytest.raises(RevisionConflict):  # a session that does not exist has no revision
        m.append_items("rev-none", [USER], create_for="alice", revision=("r1", "r2"))
    with pytest.raises(InvalidInput):
        m.append_items(sid, [USER], revision=("r3", "not a revision"))
    with pytest.raises(InvalidInput):  # creating needs someone to create it for
        m.append_items("rev-2", [USER], revision=(None, "r1"))
    assert m.export_session(sid).session.revision == "r3"  # an export carries it


def test_delete_checks_the_revision_and_the_owner_may_create_the_id_again(
    m: SessionManager,
) -> None:
    sid = "rev-del"
    m.append_items(sid, [USER], create_for="alice", revision=(None, "r1"))
    m.append_items(sid, [RESULT], revision=("r1", "r2"))
    with pytest.raises(RevisionConflict):
        m.delete_session(sid, revision="r1")
    assert m.get_session(sid).total_interactions == 2
    m.delete_session(sid, revision="r2")
    with pytest.raises(SessionNotFound):
        m.get_session(sid)
    with pytest.raises(RevisionConflict):  # a late write: the revision it read is gone
        m.append_items(sid, [TOOL_CALL], revision=("r2", "r3"))
    with pytest.raises(SessionNotFound):  # without a revision check, never resurrected
        m.append_items(sid, [TOOL_CALL], create_for="alice")
    with pytest.raises(SessionNotFound):  # another user may not take the id over
        m.append_items(sid, [TOOL_CALL], create_for="bob", revision=(None, "b1"))
    m.append_items(sid, [TOOL_CALL], create_for="alice", revision=(None, "a1"))
    s = m.get_session(sid, history=10)
    assert (s.user_id, s.revision, s.total_interactions) == ("alice", "a1", 1)


def _cas_many(url: str, sid: str, k: int, attempts: int, out: Any) -> None:
    """Read the revision, append an item naming it, set a new one: count the wins."""
    with SessionManager.from_url(url) as m:
        won = 0
        for i in range(attempts):
            read = m.get_session(sid).revision
            new = f"p{k}-{i}"
            try:
                m.append_items(sid, [{"after": read, "rev": new}], revision=(read, new))
                won += 1
            except RevisionConflict:
                pass
        out.put(won)


@pytest.mark.slow
def test_eight_processes_one_winner_per_revision(m: SessionManager, url: str) -> None:
    sid = "rev-hot"
    m.append_items(sid, [{"after": None, "rev": "r0"}], create_for="alice", revision=(None, "r0"))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_cas_many, args=(url, sid, k, 60, out)) for k in range(8)]
    for p in procs:
        p.start()
    wins = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    items = m.get_items(sid)
    assert len(items) == 1 + sum(wins)
    assert 0 < sum(wins) < 8 * 60  # they did race
    # A chain: each write names the revision the one before it set, so no two writes won
    # from the same revision, and none was lost.
    assert [x["after"] for x in items[1:]] == [x["rev"] for x in items[:-1]]
    assert m.get_session(sid).revision == items[-1]["rev"]


def test_an_entry_is_read_by_id(url: str) -> None:
    from cryptography.fernet import Fernet

    s = Settings(encryption_keys=[Fernet.generate_key().decode()])
    with SessionManager(sync_client(url, s), s) as m:
        sid = m.create_session("alice").session_id
        m.append_items(sid, [{"n": i} for i in range(150)], ids=[f"e{i}" for i in range(150)])
        logged = m.log_interaction(sid, user_message="hi", assistant_response="hello")
        for i in (0, 63, 64, 149):  # across the pages the script reads back
            got = m.get_entry(sid, f"e{i}")
            assert isinstance(got, Item)
            assert (got.id, got.item) == (f"e{i}", {"n": i})
        assert m.get_entry(sid, logged.id) == logged
        assert m.get_entry(sid, "nope") is None
        with pytest.raises(PermissionDenied):
            m.get_entry(sid, "e0", user_id="bob")
        with pytest.raises(InvalidInput):
            m.get_entry(sid, "not an id")


def test_a_sliding_read_keeps_the_activity_time(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    before = m.get_session(sid)
    after = m.get_session(sid, slide=True)
    assert after.last_activity == before.last_activity
    assert after.expires_at > before.expires_at
    assert m.list_active_sessions("alice").sessions[0].last_activity == before.last_activity
