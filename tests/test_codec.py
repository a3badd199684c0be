"""The codec: history records (TIME ID KIND BODY) and session hashes, written and read back.

Reads validate every record with the models themselves (one definition of an entry); anything
that is not of the written shape is CorruptData, never another exception.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import redis
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from redsession import SessionManager
from redsession.errors import CorruptData, DecryptionError
from redsession.model.codec import (
    decode_history,
    encode_entry,
    encode_interaction,
    encode_item,
    record_from_hash,
    record_time,
    sealed_body,
    session_from_hash,
    summary_from_row,
)
from redsession.model.crypto import Cipher
from redsession.model.models import (
    Interaction,
    Item,
    Session,
    SessionRecord,
    SessionSummary,
    from_us,
    to_us,
)
from redsession.storage.commands import raw_hash
from redsession.storage.keys import Keys

K = Keys()
PLAIN = Cipher()
SEALED = Cipher([Fernet.generate_key().decode()])
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)

scalar_st = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False)
)  # fmt: skip
json_st = st.recursive(
    scalar_st,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
id_st = st.text("abcXYZ019_-", min_size=1, max_size=20)
# whole µs, as stored: the store keeps microseconds, as datetime does
time_st = st.integers(0, to_us(datetime(9999, 1, 1, tzinfo=timezone.utc))).map(from_us)
interaction_st = st.builds(
    Interaction,
    id=id_st,
    timestamp=time_st,
    user_message=st.text(max_size=30),
    assistant_response=st.none() | st.text(max_size=30),
    metadata=st.dictionaries(st.text(max_size=5), json_st, max_size=4),
    topics=st.lists(st.text(min_size=1, max_size=8), max_size=3),
)
item_st = st.builds(
    Item, id=id_st, timestamp=time_st,
    item=st.dictionaries(st.text(max_size=8), json_st, max_size=5),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(interaction_st | item_st, max_size=6), sealed=st.booleans())
def test_records_read_back_equal(entries: list[Interaction | Item], sealed: bool) -> None:
    cipher = SEALED if sealed else PLAIN
    records = [encode_entry(e, cipher) for e in entries]
    read = decode_history(records, cipher)
    assert read == entries
    for got, want in zip(read, entries):
        assert got.model_dump_json() == want.model_dump_json()
        if isinstance(got, Item):  # the item as given: key order and numbers kept
            assert orjson.dumps(got.item) == orjson.dumps(want.item)


def test_a_record_is_its_entrys_json_with_a_fixed_layout_and_times_sort_as_bytes() -> None:
    i = Interaction(id="i1", timestamp=T0, user_message="hi")
    rec = encode_interaction(i, PLAIN)
    assert rec.startswith(b'{"timestamp":"2030-01-01T00:00:00.000000Z","id":"i1",')
    assert Interaction.model_validate_json(rec) == i  # the record is the entry
    item = encode_item("m1", T0, b'{"b":1,"a":2.50}', SEALED)
    assert item.startswith(b'{"timestamp":"2030-01-01T00:00:00.000000Z","id":"m1",'
                           b'"kind":"item","sealed":"gAAAAA')  # fmt: skip
    assert SEALED.open(sealed_body(item)) == b'"item":{"b":1,"a":2.50}'
    assert b"2.50" not in item
    times = [T0 - timedelta(days=400 * n, microseconds=n) for n in range(-5, 6)]
    assert sorted(record_time(t) for t in times) == [record_time(t) for t in sorted(times)]
    assert {len(record_time(t)) for t in times} == {27}
    zoned = T0.astimezone(timezone(timedelta(hours=5)))
    assert record_time(zoned) == record_time(T0)


def test_records_written_before_the_layout_are_still_read() -> None:
    old = {"id": "i1", "timestamp": "2030-01-01T02:00:00+02:00", "user_message": "hi",
           "assistant_response": None, "metadata": {"m": 1}, "topics": ["t"]}  # fmt: skip
    new = encode_interaction(Interaction(id="i2", timestamp=T0, user_message="x"), PLAIN)
    for cipher in (PLAIN, SEALED):
        got = decode_history([cipher.seal(orjson.dumps(old)), new], cipher)
        assert got[0] == Interaction.model_validate(old)
        assert got[0].timestamp == T0
        assert got[1].id == "i2"


def _rec(rest: bytes, kind: bytes = b"interaction") -> bytes:
    return b'{"timestamp":"2030-01-01T00:00:00.000000Z","id":"i1","kind":"' + kind + b'"' + rest


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[1, 2]",
        b"",
        b'{"timestamp":"2030-01-01T00:00:00.000000Z"',  # a layout and nothing else
        _rec(b"}"),
        _rec(b',"user_message": 5}'),
        _rec(b',"user_message": "x", "assistant_response": 7}'),
        _rec(b',"user_message": "x", "metadata": [1]}'),
        _rec(b',"user_message": "x", "topics": "billing"}'),
        _rec(b',"user_message": "x", "extra": 1}'),
        _rec(b',"user_message": "x"}', kind=b"zebra"),  # an unknown kind
        _rec(b',"item": [1]}', kind=b"item"),  # an item must be an object
        _rec(b',"item": {"a": 1}}, {"b": 2}', kind=b"item"),
        _rec(b',"sealed":"not a token"}', kind=b"item"),
        b'{"timestamp":"yesterday","id":"i1","kind":"interaction","user_message":"x"}',
        orjson.dumps({"id": "i1", "timestamp": "2030-01-01T00:00:00", "user_message": "x"}),
    ],
)
def test_malformed_records_are_corrupt_data(record: bytes) -> None:
    good = encode_interaction(Interaction(id="i0", timestamp=T0, user_message="ok"), PLAIN)
    with pytest.raises(CorruptData, match="history record in Redis"):
        decode_history([good, record], PLAIN)


def test_a_sealed_record_without_a_key_says_so() -> None:
    sealed = encode_item("m1", T0, b"{}", SEALED)
    with pytest.raises(DecryptionError, match="no key is configured"):
        decode_history([sealed], PLAIN)


HASH = {
    "user_id": "u1", "created_at": str(to_us(T0)), "last_activity": str(to_us(T0)),
    "expires_at": str(to_us(T0 + timedelta(days=7))), "total_interactions": "2",
    "context": '{"a": [1, {"b": null}]}', "topics": '["x"]', "version": "3",
    "merged_from": '["old"]',
}  # fmt: skip


def stored(h: dict[str, str]) -> dict[str, bytes]:
    """A hash as the store reads it (storage.commands.raw_hash: values as bytes)."""
    return raw_hash([x for kv in h.items() for x in kv])


def test_session_from_hash_equals_the_validated_model() -> None:
    records = [_rec(b',"user_message": "hi"}')]
    history = decode_history(records, PLAIN)
    got = session_from_hash("s1", stored(HASH), records, PLAIN)
    want = Session(
        session_id="s1", user_id="u1", total_interactions=2, created_at=T0, last_activity=T0,
        expires_at=T0 + timedelta(days=7), context={"a": [1, {"b": None}]}, topics=["x"],
        version=3, merged_from=["old"], history=history,
    )  # fmt: skip
    assert got == want
    assert got.model_dump_json() == want.model_dump_json()
    rec = record_from_hash("s1", stored(HASH), PLAIN)
    assert rec == SessionRecord.model_validate(want.model_dump(exclude={"expires_at", "history"}))
    summary = summary_from_row("s1", dict(HASH))
    assert summary == SessionSummary.model_validate(
        want.model_dump(include=set(SessionSummary.model_fields))
    )


@pytest.mark.parametrize(
    "change",
    [
        {"created_at": "soon"},
        {"version": ""},
        {"last_activity": "9" * 30},  # beyond datetime's range
        {"context": "[1]"},
        {"context": "{"},
        {"topics": '"x"'},
        {"topics": "[1]"},
        {"merged_from": "{}"},
        {"user_id": None},  # a missing field
    ],
)
def test_malformed_hashes_are_corrupt_data(change: dict[str, Any]) -> None:
    h = stored({k: v for k, v in {**HASH, **change}.items() if v is not None})
    with pytest.raises(CorruptData, match="'s1'"):
        session_from_hash("s1", h, [], PLAIN)
    with pytest.raises(CorruptData, match="'s1'"):
        record_from_hash("s1", h, PLAIN)


@pytest.mark.parametrize("field", ["created_at", "expires_at", "total_interactions", "user_id"])
def test_malformed_summary_rows_are_corrupt_data(field: str) -> None:
    row = {**HASH, field: "x"}
    if field == "user_id":
        del row[field]
    with pytest.raises(CorruptData, match="'s1'"):
        summary_from_row("s1", row)


def test_corrupt_data_in_redis_reaches_the_caller_as_corrupt_data(
    manager: SessionManager, redis_client: redis.Redis
) -> None:
    sid = manager.create_session("u1").session_id
    manager.log_interaction(sid, user_message="hello", user_id="u1")
    redis_client.lset(K.log(sid), 0, b'{"id": "i1"}')
    for read in (
        lambda: manager.resume_session(sid, "u1"),
        lambda: manager.export_session_data(sid, user_id="u1"),
        lambda: manager.get_history(sid, user_id="u1"),
    ):
        with pytest.raises(CorruptData):
            read()
    redis_client.hset(K.session(sid), "created_at", "junk")
    with pytest.raises(CorruptData):
        manager.list_active_sessions("u1")


def test_bytes_that_are_not_utf8_where_text_belongs_are_corrupt_data(
    manager: SessionManager, redis_client: redis.Redis, redis_url: str
) -> None:
    # Each used to escape as a bare UnicodeDecodeError (a traceback for CLI users).
    sid = manager.create_session("u1").session_id
    for field in ("context", "user_id"):
        redis_client.hset(K.session(sid), field, b"\xff")
        with pytest.raises(CorruptData, match="not UTF-8"):
            manager.get_session(sid)
    # An application client decoding replies itself fails inside redis-py on such bytes.
    redis_client.zadd(K.sessions, {b"\xff": 1})
    app = SessionManager(redis.Redis.from_url(redis_url, decode_responses=True))
    try:
        with pytest.raises(CorruptData, match="not UTF-8"):
            app.list_active_sessions()
    finally:
        app.close()
