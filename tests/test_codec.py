"""The codec's read path: records read back without validation must equal validated ones,
and anything not of the written shape must be validated in full or rejected as CorruptData."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import redis
from cryptography.fernet import Fernet
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from redsession import SessionManager
from redsession.errors import CorruptData, DecryptionError
from redsession.model.codec import (
    decode_interactions,
    encode_interaction,
    record_from_hash,
    session_from_hash,
    summary_from_row,
)
from redsession.model.crypto import Cipher
from redsession.model.models import (
    Interaction,
    Session,
    SessionRecord,
    SessionSummary,
    from_us,
    to_us,
    trusted,
)
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
interaction_st = st.builds(
    Interaction,
    id=st.text(min_size=1, max_size=20),
    # whole µs, as stored: the store keeps microseconds, as datetime does
    timestamp=st.integers(0, to_us(datetime(9999, 1, 1, tzinfo=timezone.utc))).map(from_us),
    user_message=st.text(max_size=30),
    assistant_response=st.none() | st.text(max_size=30),
    metadata=st.dictionaries(st.text(max_size=5), json_st, max_size=4),
    topics=st.lists(st.text(min_size=1, max_size=8), max_size=3),
)


def _validated(records: list[bytes], cipher: Cipher) -> list[Interaction]:
    return [Interaction.model_validate_json(cipher.open(r)) for r in records]


@settings(max_examples=200, deadline=None)
@given(items=st.lists(interaction_st, max_size=6), sealed=st.booleans())
def test_records_read_back_equal_validated_ones(items: list[Interaction], sealed: bool) -> None:
    cipher = SEALED if sealed else PLAIN
    records = [encode_interaction(i, cipher) for i in items]
    read = decode_interactions(records, cipher)
    assert read == items == _validated(records, cipher)
    for got in read:
        assert got.timestamp.tzinfo is timezone.utc
        again = Interaction.model_validate_json(got.model_dump_json())
        assert got.model_dump_json() == again.model_dump_json()


# Records of every shape, mostly near the stored one: the fast read path and full pydantic
# validation must agree on each (the same model, or both reject it).
zones = [timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9))]
zone_st = st.sampled_from(zones)
good_st = {
    "id": st.text(min_size=1, max_size=128),
    "timestamp": st.one_of(
        st.datetimes(timezones=zone_st).map(lambda d: d.isoformat()),
        st.datetimes(timezones=zone_st).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    ),
    "user_message": st.text(max_size=10),
    "assistant_response": st.none() | st.text(max_size=10),
    "metadata": st.dictionaries(st.text(max_size=5), json_st, max_size=3),
    "topics": st.lists(st.text(max_size=5), max_size=3),
}
bad_st = {
    "id": st.text(min_size=129, max_size=130) | scalar_st,
    "timestamp": st.one_of(
        st.datetimes().map(lambda d: d.isoformat()),  # no zone
        st.datetimes().map(lambda d: d.isoformat(sep=" ") + "Z"),
        st.integers(-(2**40), 2**40),
        st.text(max_size=30),
        st.none(),
    ),
    "user_message": scalar_st,
    "assistant_response": scalar_st,
    "metadata": json_st,
    "topics": st.lists(scalar_st, max_size=2) | json_st,
}


@st.composite
def record_st(draw: st.DrawFn) -> bytes:
    d = {k: draw(bad_st[k] if draw(st.integers(0, 7)) == 0 else ok) for k, ok in good_st.items()}
    for k in draw(st.sets(st.sampled_from(list(d)), max_size=1)):
        del d[k]
    if draw(st.integers(0, 9)) == 0:
        d[draw(st.text(max_size=5))] = draw(scalar_st)
    return orjson.dumps(d)


@settings(max_examples=500, deadline=None)
@given(record=record_st())
def test_fast_reads_agree_with_pydantic(record: bytes) -> None:
    try:
        want = Interaction.model_validate_json(record)
    except ValidationError:
        with pytest.raises(CorruptData):
            decode_interactions([record], PLAIN)
        return
    (got,) = decode_interactions([record], PLAIN)
    event("valid")
    assert got == want
    assert got.model_dump_json() == want.model_dump_json()
    assert got.timestamp.tzinfo is timezone.utc


@pytest.mark.parametrize("cls", [Interaction, Session, SessionRecord, SessionSummary])
def test_trusted_builds_what_model_construct_builds(cls: type[Any]) -> None:
    # trusted() sets pydantic's instance attributes itself: this fails if a pydantic release
    # changes what an instance holds.
    values = {n: f.get_default(call_default_factory=True) for n, f in cls.model_fields.items()}
    values.update({k: v for k, v in {
        "id": "i1", "timestamp": T0, "user_message": "hi", "session_id": "s1", "user_id": "u1",
        "total_interactions": 0, "created_at": T0, "last_activity": T0, "expires_at": T0,
    }.items() if k in values})  # fmt: skip
    made, built = trusted(cls, dict(values)), cls.model_construct(**values)
    assert made.__dict__ == built.__dict__
    assert made.model_fields_set == built.model_fields_set
    assert made.__pydantic_extra__ == built.__pydantic_extra__
    assert made.__pydantic_private__ == built.__pydantic_private__
    assert made == built == cls.model_validate(values)
    assert made.model_dump_json() == cls.model_validate(values).model_dump_json()


def _record(**change: Any) -> bytes:
    d = {"id": "i1", "timestamp": "2030-01-01T00:00:00Z", "user_message": "hi",
         "assistant_response": None, "metadata": {}, "topics": []}  # fmt: skip
    d.update(change)
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


@pytest.mark.parametrize(
    "record",
    [
        _record(timestamp="2030-01-01T02:00:00+02:00"),  # another zone: normalised to UTC
        _record(timestamp="2030-01-01T00:00:00+00:00"),
        _record(topics=...),  # a field left to its default
        _record(assistant_response=...),
        # the keys in another order (serialisation would follow it)
        orjson.dumps(dict(reversed(orjson.loads(_record()).items()))),
    ],
)
def test_other_valid_shapes_are_validated_in_full(record: bytes) -> None:
    (got,) = decode_interactions([_record(), record], PLAIN)[1:]
    assert got == Interaction.model_validate_json(record)
    assert got.timestamp == T0
    assert got.timestamp.tzinfo is timezone.utc


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[1, 2]",
        b"1, 2",  # two values once the records are joined into one array
        b"",
        _record(id=...),
        _record(user_message=5),
        _record(assistant_response=7),
        _record(metadata=[1]),
        _record(topics="billing"),
        _record(topics=[1]),
        _record(timestamp="yesterday"),
        _record(timestamp="2030-01-01T00:00:00"),  # no zone
        _record(extra=1),
    ],
)
def test_malformed_records_are_corrupt_data(record: bytes) -> None:
    with pytest.raises(CorruptData, match="interaction record in Redis is malformed"):
        decode_interactions([_record(), record], PLAIN)


def test_a_sealed_record_without_a_key_says_so() -> None:
    with pytest.raises(DecryptionError, match="no key is configured"):
        decode_interactions([_record(), SEALED.seal(_record())], PLAIN)


HASH = {
    "user_id": "u1", "created_at": str(to_us(T0)), "last_activity": str(to_us(T0)),
    "expires_at": str(to_us(T0 + timedelta(days=7))), "total_interactions": "2",
    "context": '{"a": [1, {"b": null}]}', "topics": '["x"]', "version": "3",
    "merged_from": '["old"]',
}  # fmt: skip


def test_session_from_hash_equals_the_validated_model() -> None:
    history = decode_interactions([_record()], PLAIN)
    got = session_from_hash("s1", dict(HASH), history, PLAIN)
    want = Session(
        session_id="s1", user_id="u1", total_interactions=2, created_at=T0, last_activity=T0,
        expires_at=T0 + timedelta(days=7), context={"a": [1, {"b": None}]}, topics=["x"],
        version=3, merged_from=["old"], history=history,
    )  # fmt: skip
    assert got == want
    assert got.model_dump_json() == want.model_dump_json()
    rec = record_from_hash("s1", dict(HASH), PLAIN)
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
    h = {k: v for k, v in {**HASH, **change}.items() if v is not None}
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
