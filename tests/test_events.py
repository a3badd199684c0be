"""The event stream as a reader sees it: one event per write with the right fields, never
message text, capped, written once per operation id, paged without gaps or repeats.

Every test that takes ``url`` runs on one server and on a 3-primary Redis Cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from redsession import AsyncSessionManager, InvalidInput, SessionManager, Settings
from redsession.model.models import Event, utcnow
from redsession.storage.connection import sync_client
from redsession.storage.keys import Keys
from tests.topology import Cluster, redis_cluster  # noqa: F401  (the session's cluster)

K = Keys()
MARKER = "SECRET-MARKER-7f3a"


def _manager(url: str, tmp_path: Path, **kw: Any) -> SessionManager:
    s = Settings(data_dir=tmp_path / "data", **kw)
    return SessionManager(sync_client(url, s), s)


@pytest.fixture
def m(url: str, tmp_path: Path) -> Iterator[SessionManager]:
    with _manager(url, tmp_path) as manager:
        yield manager


def _all(m: SessionManager) -> list[Event]:
    out: list[Event] = []
    after = None
    while True:
        page = m.events(after, limit=1000)
        out += page.events
        if not page.events:
            return out
        after = page.after


def _raw_entries(m: SessionManager) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return list(m.client.xrange(K.events, "-", "+"))


def test_each_write_kind_writes_one_event_with_its_fields(
    m: SessionManager, url: str, tmp_path: Path
) -> None:
    start = utcnow()
    sid = m.create_session("alice", op_id="op-create").session_id
    m.log_interaction(sid, user_message="hi", assistant_response="yo", op_id="op-log")
    m.append_items(sid, [{"role": "user", "content": "x"}], op_id="op-items")
    m.pop_item(sid, op_id="op-pop")
    m.replace_history(sid, [{"role": "user", "content": "y"}], op_id="op-replace")
    m.clear_history(sid, op_id="op-clear")
    m.update_context(sid, {"lang": "en"}, op_id="op-context")
    other = m.create_session("alice", op_id="op-create-2").session_id
    m.merge_sessions(sid, other, op_id="op-merge")
    doc = m.export_session_data(sid)
    m.delete_session(sid, op_id="op-delete")
    doc["session"]["session_id"] = "imported-1"
    m.import_session_data(doc, op_id="op-import")
    expected = [
        ("create", sid, "op-create"),
        ("log", sid, "op-log"),
        ("log", sid, "op-items"),
        ("history", sid, "op-pop"),
        ("history", sid, "op-replace"),
        ("history", sid, "op-clear"),
        ("context", sid, "op-context"),
        ("create", other, "op-create-2"),
        ("merge", other, "op-merge:tomb"),  # the merge's last step, named after the call
        ("delete", sid, "op-delete"),
        ("import", "imported-1", "op-import"),
    ]
    got = _all(m)
    assert [(e.kind, e.session_id, e.op_id) for e in got] == expected
    assert all(e.user_id == "alice" for e in got)
    end = utcnow()
    assert all(start - timedelta(seconds=1) <= e.time <= end + timedelta(seconds=1) for e in got)
    assert all(e.time.tzinfo is not None and e.time.utcoffset() == timedelta(0) for e in got)
    merge = next(e for e in got if e.kind == "merge")
    assert merge.extras == {"into": sid}
    assert all(e.extras == {} for e in got if e.kind != "merge")
    ids = [e.id for e in got]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_maintenance_writes_restore_rotate_expire_and_resume_events(
    url: str, tmp_path: Path
) -> None:
    key1, key2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with _manager(url, tmp_path, encryption_keys=[key1], events_resume=True) as m:
        sid = m.create_session("bob").session_id
        m.log_interaction(sid, user_message="hi")
        m.resume_session(sid, "bob")
        m.dump_sessions()
        m.delete_session(sid)
        m.client.delete(K.session(sid) + ":tomb")  # let restore bring it back
        m.restore_sessions()
    with _manager(url, tmp_path, encryption_keys=[key2, key1]) as m:
        m.rotate_keys()
    # A session whose expiry has passed: written by a clock eight days slow.
    s = Settings(data_dir=tmp_path / "data")
    late = SessionManager(
        sync_client(url, s), s, clock=lambda: datetime.now(timezone.utc) - timedelta(days=8)
    )
    with late:
        gone = late.create_session("carol").session_id
    with _manager(url, tmp_path) as m:
        assert m.cleanup().sessions == 1
        got = [(e.kind, e.session_id) for e in _all(m)]
    assert got == [
        ("create", sid), ("log", sid), ("resume", sid), ("delete", sid), ("restore", sid),
        ("rotate", sid), ("create", gone), ("expire", gone),
    ]  # fmt: skip


def test_no_message_text_ever_reaches_the_stream(m: SessionManager) -> None:
    sid = m.create_session("alice", context={"note": MARKER}).session_id
    m.log_interaction(
        sid, user_message=f"say {MARKER}", assistant_response=f"{MARKER}!",
        metadata={"m": MARKER},
    )  # fmt: skip
    m.append_items(sid, [{"role": "user", "content": MARKER}])
    m.update_context(sid, {"more": MARKER})
    m.replace_history(sid, [{"role": "assistant", "content": MARKER}])
    m.merge_sessions(sid, m.create_session("alice", context={"x": MARKER}).session_id)
    entries = _raw_entries(m)
    assert len(entries) >= 7
    for _, fields in entries:
        for k, v in fields.items():
            assert MARKER.encode() not in k, fields
            assert MARKER.encode() not in v, fields
    assert not any(MARKER in e.model_dump_json() for e in _all(m))


def test_maxlen_caps_the_stream(url: str, tmp_path: Path) -> None:
    with _manager(url, tmp_path, events_maxlen=10) as m:
        sid = m.create_session("alice").session_id
        for i in range(600):
            m.log_interaction(sid, user_message=f"m{i}")
        n = m.client.xlen(K.events)
        # MAXLEN ~ trims whole stream nodes (stream-node-max-entries: 100 by default).
        assert 10 <= n <= 10 + 100
        assert m.stats().events == n
        newest = _all(m)[-1]
        assert newest.kind == "log"
        assert newest.session_id == sid


def test_no_events_when_the_cap_is_zero(url: str, tmp_path: Path) -> None:
    with _manager(url, tmp_path, events_maxlen=0) as m:
        sid = m.create_session("alice").session_id
        m.log_interaction(sid, user_message="hi")
        assert m.client.exists(K.events) == 0
        assert m.events().events == []


WRITES = {
    "create": lambda m, sid, op: m.create_session("alice", session_id="fresh-1", op_id=op),
    "log": lambda m, sid, op: m.log_interaction(sid, user_message="hi", op_id=op),
    "items": lambda m, sid, op: m.append_items(sid, [{"a": 1}], op_id=op),
    "pop": lambda m, sid, op: m.pop_item(sid, op_id=op),
    "replace": lambda m, sid, op: m.replace_history(sid, [{"b": 2}], op_id=op),
    "clear": lambda m, sid, op: m.clear_history(sid, op_id=op),
    "context": lambda m, sid, op: m.update_context(sid, {"k": "v"}, op_id=op),
    "delete": lambda m, sid, op: m.delete_session(sid, op_id=op),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_repeated_with_its_op_id_writes_one_event(m: SessionManager, write: str) -> None:
    sid = m.create_session("alice").session_id
    m.log_interaction(sid, user_message="before")
    WRITES[write](m, sid, "op-repeated")
    WRITES[write](m, sid, "op-repeated")
    assert [e.op_id for e in _all(m)].count("op-repeated") == 1


def test_a_merge_and_an_import_repeated_write_one_event_each(m: SessionManager) -> None:
    a = m.create_session("alice").session_id
    b = m.create_session("alice").session_id
    m.merge_sessions(a, b, op_id="op-merge")
    m.merge_sessions(a, b, op_id="op-merge")
    doc = m.export_session_data(a)
    doc["session"]["session_id"] = "copy-1"
    m.import_session_data(doc, op_id="op-import")
    m.import_session_data(doc, op_id="op-import")
    ops = [e.op_id for e in _all(m)]
    assert [o for o in ops if o.startswith("op-merge")] == ["op-merge:tomb"]
    assert ops.count("op-import") == 1


def test_pages_have_no_gaps_or_repeats(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    for i in range(120):
        m.log_interaction(sid, user_message=f"m{i}")
    want = [i.decode() for i, _ in _raw_entries(m)]
    seen: list[str] = []
    after = None
    for _ in range(100):
        page = m.events(after, limit=7)
        assert len(page.events) <= 7
        seen += [e.id for e in page.events]
        if not page.events:
            assert page.after == after  # nothing new: the cursor stays
            break
        after = page.after
    assert seen == want


def test_kinds_filter_and_page_on_past_other_kinds(m: SessionManager) -> None:
    first = m.create_session("alice").session_id
    for i in range(1500):  # more than the pages one filtered call looks at
        m.log_interaction(first, user_message=f"m{i}")
    last = m.create_session("alice").session_id
    creates: list[str] = []
    after = None
    for _ in range(100):
        page = m.events(after, kinds=["create", "delete"], limit=100)
        assert all(e.kind == "create" for e in page.events)
        creates += [e.session_id for e in page.events]
        if page.after == after:
            break
        after = page.after
    assert creates == [first, last]
    logs = m.events(kinds=["log"], limit=5).events
    assert [e.kind for e in logs] == ["log"] * 5


def test_wait_for_events_waits_for_the_next_and_gives_up_in_time(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    tail = m.events().after
    empty = m.wait_for_events(tail, block=0.2)
    assert empty.events == []
    assert empty.after == tail
    writer = threading.Timer(0.3, lambda: m.log_interaction(sid, user_message="late"))
    writer.start()
    try:
        page = m.wait_for_events(tail, block=2.0)
    finally:
        writer.join()
    assert [e.kind for e in page.events] == ["log"]
    assert page.after == page.events[-1].id
    only_delete = m.wait_for_events(tail, kinds=["delete"], block=0.2)
    assert only_delete.events == []
    assert only_delete.after == page.after


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"after": "not-an-id"}, "invalid event id"),
        ({"after": "1-2-3"}, "invalid event id"),
        ({"kinds": ["bogus"]}, "unknown event kind 'bogus'"),
        ({"kinds": "log"}, "must be a list"),
        ({"limit": 0}, "at least 1"),
        ({"limit": 10_001}, "at most 10000"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(
    m: SessionManager, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        m.events(**kw)


def test_a_hand_written_entry_is_skipped_not_fatal(m: SessionManager) -> None:
    m.client.xadd(K.events, {"hello": "world"})
    sid = m.create_session("alice").session_id
    assert [e.session_id for e in m.events().events] == [sid]


def test_ack_moves_a_cursor_forward_once_and_counts_dead_letters(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    m.log_interaction(sid, user_message="hi")
    first, second = m.events().events
    assert m.event_cursor("hook") is None
    assert m.ack_event("hook", first.id)
    assert m.event_cursor("hook") == first.id
    assert m.ack_event("hook", second.id, failed={"error": "HTTP 500", "attempts": "3"})
    assert not m.ack_event("hook", second.id, failed={"error": "again"})  # a repeat
    assert not m.ack_event("hook", first.id)  # never back
    assert m.event_cursor("hook") == second.id
    assert m.stats().webhook_dead_letters == 1
    dead = m.client.xrange(K.event_dead, "-", "+")
    assert len(dead) == 1
    assert dead[0][1] == {b"consumer": b"hook", b"error": b"HTTP 500", b"attempts": b"3"}


async def test_the_async_manager_reads_the_same_events(redis_url: str) -> None:
    with SessionManager(redis.Redis.from_url(redis_url)) as m:
        sid = m.create_session("alice").session_id
        m.log_interaction(sid, user_message="hi")
        want = m.events()
    am = AsyncSessionManager.from_url(redis_url)
    try:
        assert await am.events() == want
        page = await am.wait_for_events(want.after, block=0.1)
        assert page.events == []
        assert page.after == want.after
        assert await am.ack_event("c", want.events[0].id)
        assert await am.event_cursor("c") == want.events[0].id
    finally:
        await am.close()


def test_cluster_keeps_the_stream_and_its_consumers_in_one_slot() -> None:
    slots = {
        redis.cluster.key_slot(k.encode())
        for k in (K.events, K.event_ops, K.event_consumers, K.event_dead)
    }
    assert len(slots) == 1


def test_events_come_in_time_order_across_sessions(m: SessionManager) -> None:
    sids = [m.create_session("alice").session_id for _ in range(5)]
    for sid in sids:
        m.log_interaction(sid, user_message="x")
    got = _all(m)
    assert [e.session_id for e in got if e.kind == "log"] == sids
    assert [e.time for e in got] == sorted(e.time for e in got)


def test_every_kind_a_script_writes_is_a_known_kind() -> None:
    # A kind missing from EVENT_KINDS could not be asked for (events(kinds=...), --kind).
    import re

    from redsession.model.models import EVENT_KINDS
    from redsession.storage import checkpoints, scripts, store

    written: set[str] = set()
    for module in (scripts, checkpoints, store):
        source = Path(module.__file__ or "").read_text("utf-8")
        written |= set(re.findall(r"""event\(['"]([a-z]+)['"]""", source))
    assert written  # the pattern still finds the scripts' events
    assert written <= set(EVENT_KINDS), written - set(EVENT_KINDS)
