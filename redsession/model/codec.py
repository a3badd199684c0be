"""Conversions between what the store holds (records, hash fields) and the models."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from redsession.errors import CorruptData, InvalidInput
from redsession.model.crypto import Cipher
from redsession.model.models import (
    Entry,
    Interaction,
    Item,
    Session,
    SessionExport,
    SessionRecord,
    SessionSummary,
    SideData,
    from_us,
    to_us,
)
from redsession.model.validation import problems

# -- history records ------------------------------------------------------------------------
#
# One record of a session's history log (a Redis LIST, oldest first) is a JSON object that
# begins with a fixed layout, then holds the rest of the entry:
#
#     {"timestamp":"2026-12-02T16:48:00.123456Z","id":"<id>","kind":"interaction",...}
#     {"timestamp":"...","id":"<id>","kind":"item","item":<the item, as given>}
#
# The time is UTC, always 27 bytes at the same place, so the Lua scripts read it (and the id
# after it) with string.sub and compare times as strings, without decoding anything. A
# record is thus the entry's own JSON: a history reads back as one JSON array of its records,
# validated by the models in one pydantic call, with no per-record work in Python.
#
# With encryption on, all but the layout is sealed: {"timestamp":..,"id":..,"kind":..,
# "sealed":"<Fernet token of the rest>"}; time, id and kind stay in the clear, as ids, owners
# and timestamps do in the session hash. Records written before this layout (a JSON object
# holding a whole Interaction, or a token of one) are still read.

M = TypeVar("M", bound=BaseModel)
TIME_BYTES = 27
_HEAD = b'{"timestamp":"'
_SEALED = b',"sealed":"'
_HISTORY: TypeAdapter[list[Interaction | Item]] = TypeAdapter(list[Entry])


def loads(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CorruptData(f"{what} in Redis is not valid JSON: {e}") from e


def _iso(dt: datetime) -> bytes:
    """``dt`` in UTC as a quoted JSON string, always "2026-12-02T16:48:00.123456Z" (27 bytes
    inside the quotes). orjson writes it in C; it leaves out a zero fraction, so a whole
    second takes the slow way."""
    if dt.tzinfo is not timezone.utc:
        dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        return orjson.dumps(dt, option=orjson.OPT_UTC_Z)
    return b'"' + dt.isoformat(timespec="microseconds")[:26].encode() + b'Z"'


def _when(us: int) -> bytes:
    """Microseconds since the epoch as _iso does (the hash's times; one call, it is hot)."""
    dt = from_us(us)
    return orjson.dumps(dt, option=orjson.OPT_UTC_Z) if us % 1_000_000 else _iso(dt)


def record_time(dt: datetime) -> bytes:
    """A record's time: fixed width, so byte order is time order."""
    return _iso(dt)[1:-1]


TIME_AT = slice(len(_HEAD), len(_HEAD) + 27)  # a record's time, in its first bytes


def time_of_record(rec: bytes) -> datetime:
    """The time at the head of a record (or of the 27 bytes that TIME_AT cuts from one)."""
    when = rec[TIME_AT] if len(rec) > 27 else rec
    return datetime.fromisoformat(when[:26].decode()).replace(tzinfo=timezone.utc)  # no "Z"


def _record(dt: datetime, rid: str, kind: bytes, rest: bytes, cipher: Cipher) -> bytes:
    """``rest``: the entry's other members, as ``"name":value,...`` JSON."""
    head = b'%s%s","id":"%s","kind":"%s"' % (_HEAD, record_time(dt), rid.encode(), kind)
    if not cipher.enabled:
        return head + b"," + rest + b"}"
    return head + _SEALED + cipher.seal(rest) + b'"}'


def encode_interaction(
    i: Interaction, cipher: Cipher, metadata_json: bytes | None = None
) -> bytes:
    """The stored record of an interaction.

    ``metadata_json``, when the caller already encoded the metadata (to check its size),
    is spliced in as is rather than encoded a second time.
    """
    metadata = i.metadata if metadata_json is None else orjson.Fragment(metadata_json)
    rest = orjson.dumps({
        "user_message": i.user_message, "assistant_response": i.assistant_response,
        "metadata": metadata, "topics": i.topics,
    })[1:-1]  # fmt: skip
    return _record(i.timestamp, i.id, b"interaction", rest, cipher)


def encode_item(rid: str, at: datetime, item_json: bytes, cipher: Cipher) -> bytes:
    """The stored record of a framework item, given as its (checked) JSON."""
    return _record(at, rid, b"item", b'"item":' + item_json, cipher)


def encode_entry(e: Interaction | Item, cipher: Cipher) -> bytes:
    """The stored record of any history entry (imports, merges and rewrites)."""
    if isinstance(e, Interaction):
        return encode_interaction(e, cipher)
    return encode_item(e.id, e.timestamp, orjson.dumps(e.item), cipher)


def sealed_body(rec: bytes | str) -> bytes:
    """The part of a record that encryption seals (the whole of an old record)."""
    raw = rec.encode() if isinstance(rec, str) else rec
    if raw.startswith(_HEAD):
        at = raw.find(_SEALED)
        return raw[at + len(_SEALED) : -2] if at >= 0 else raw
    return raw


def _entry_json(rec: bytes, cipher: Cipher) -> bytes:
    """One record as its entry's JSON: opened if sealed, framed if written before layouts."""
    if rec.startswith(_HEAD):
        at = rec.find(_SEALED)
        if at < 0:
            return rec  # plain: the record is the entry
        rest = cipher.open(rec[at + len(_SEALED) : -2], "a history entry")
        return rec[:at] + b"," + rest + b"}"
    body = cipher.open(rec, "an interaction")  # a whole Interaction, without its kind
    return b'{"kind":"interaction",' + body[1:] if body[:1] == b"{" else body


def _array(
    head: bytes, raw: Sequence[bytes | str], tail: bytes, cipher: Cipher, plain: bool
) -> bytes:
    """``head`` + the records as entries' JSON, comma-separated + ``tail``, in one copy of
    the records (a history may be megabytes; each copy is paid for). ``plain``: every record
    is known to be its entry's JSON already (nothing sealed, nothing old)."""
    # A client returns all replies as bytes or all as text (decode_responses): one look.
    if plain and (not raw or type(raw[0]) is bytes):
        recs: list[bytes] = list(raw)  # type: ignore[arg-type]
    else:
        recs = [r.encode() if isinstance(r, str) else r for r in raw]
        if not plain:
            recs = [_entry_json(r, cipher) for r in recs]
    if not recs:
        return head + tail
    recs[0] = head + recs[0]
    recs[-1] = recs[-1] + tail
    return b",".join(recs)


def decode_history(raw: Sequence[bytes | str], cipher: Cipher) -> list[Interaction | Item]:
    """The entries of these records, oldest first; CorruptData if one does not decode."""
    try:
        if not cipher.enabled:  # as in _parsed: the records as they are, first
            with contextlib.suppress(ValidationError):
                return _HISTORY.validate_json(_array(b"[", raw, b"]", cipher, plain=True))
        return _HISTORY.validate_json(_array(b"[", raw, b"]", cipher, plain=False))
    except ValidationError as e:
        raise CorruptData(f"a history record in Redis is malformed: {problems(e)}") from e


# -- session hashes: read as one JSON document, validated by the models in one call --------

Hash = Mapping[str, bytes]  # a session hash as storage.commands.raw_hash gives it


def _record_json(sid: str, h: Hash, cipher: Cipher) -> bytes:
    """A SessionRecord's fields as JSON object members (no braces), from a session hash.

    The hash's JSON fields (context, topics, merged_from, state values, scope) are spliced in
    as they are stored: pydantic parses and checks them once, with the rest.
    """
    state = b",".join([
        orjson.dumps(k[len(STATE) :]) + b":" + cipher.open(v, "session state")
        for k, v in h.items()
        if k.startswith(STATE)
    ])  # fmt: skip
    return b'"session_id":"%s","user_id":"%s","created_at":%s,"last_activity":%s,' \
        b'"total_interactions":%d,"context":%s,"topics":%s,"version":%d,"merged_from":%s,' \
        b'"state":{%s},"scope":%s,"revision":%s' % (
            sid.encode(), h["user_id"], _when(int(h["created_at"])),
            _when(int(h["last_activity"])), int(h["total_interactions"]),
            cipher.open(h["context"], "a context"), h["topics"], int(h["version"]),
            h["merged_from"], state, h.get("scope", b"null"),
            orjson.dumps(h["revision"].decode()) if "revision" in h else b"null",
        )  # fmt: skip


def _parsed(cls: type[M], sid: str, doc: Callable[[bool], bytes], cipher: Cipher) -> M:
    """``cls`` from the JSON ``doc(plain)`` makes. Without a key the records are tried as they
    are first (their own entries' JSON: the common case, no per-record work); if that fails
    (a record sealed, or written before the layout, or corrupt), each is framed and tried
    again, which says what is wrong with a corrupt one."""
    try:
        if not cipher.enabled:
            try:
                return cls.model_validate_json(doc(True))
            except ValidationError:
                pass
        return cls.model_validate_json(doc(False))
    except (KeyError, ValueError, OverflowError) as e:  # ValidationError is a ValueError
        if isinstance(e, ValidationError):
            detail = problems(e)
            if any(err["type"] == "json_invalid" for err in e.errors()):
                detail = f"not JSON, or bytes that are not UTF-8 where text belongs ({detail})"
        else:
            detail = f"{type(e).__name__}: {e}"
        raise CorruptData(f"session {sid!r} in Redis is malformed: {detail}") from e


def record_from_hash(sid: str, h: Hash, cipher: Cipher) -> SessionRecord:
    return _parsed(
        SessionRecord, sid, lambda _: b"{" + _record_json(sid, h, cipher) + b"}", cipher
    )


def expires_from_hash(sid: str, h: Hash) -> int:
    try:
        return int(h["expires_at"])
    except (KeyError, ValueError) as e:
        raise CorruptData(f"session {sid!r} in Redis has no valid expires_at") from e


def session_from_hash(
    sid: str, h: Hash, records: Sequence[bytes | str], cipher: Cipher
) -> Session:
    """The session and its history (the records given), in one validation."""

    def doc(plain: bool) -> bytes:
        head = b'{%s,"expires_at":%s,"history":[' % (
            _record_json(sid, h, cipher), _when(expires_from_hash(sid, h))
        )
        return _array(head, records, b"]}", cipher, plain)

    return _parsed(Session, sid, doc, cipher)


def export_from_hash(
    sid: str, h: Hash, records: Sequence[bytes | str], cipher: Cipher
) -> SessionExport:
    """The export document of a session, in one validation."""

    def doc(plain: bool) -> bytes:
        head = b'{"session":{%s},"expires_at":%s,"history":[' % (
            _record_json(sid, h, cipher), _when(expires_from_hash(sid, h))
        )
        return _array(head, records, b"]}", cipher, plain)

    return _parsed(SessionExport, sid, doc, cipher)


def _validated(cls: type[M], sid: str, values: dict[str, Any]) -> M:
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        raise CorruptData(f"session {sid!r} in Redis is malformed: {problems(e)}") from e


def summary_from_row(sid: str, row: dict[str, str]) -> SessionSummary:
    """A listing's row: the SUMMARY_FIELDS of a session hash."""
    try:
        return _validated(SessionSummary, sid, {
            "session_id": sid,
            "user_id": row["user_id"],
            "total_interactions": int(row["total_interactions"]),
            "created_at": from_us(int(row["created_at"])),
            "last_activity": from_us(int(row["last_activity"])),
            "expires_at": from_us(int(row["expires_at"])),
        })  # fmt: skip
    except (KeyError, ValueError, OverflowError) as e:
        raise CorruptData(f"session {sid!r} in Redis is malformed: {e}") from e


STATE = "state:"  # session state keys are hash fields under this prefix


def state_fields(state: dict[str, Any], cipher: Cipher) -> list[str | bytes]:
    """Field/value arguments for session state (already checked to be JSON)."""
    return [a for k, v in state.items() for a in (STATE + k, cipher.seal(orjson.dumps(v)))]


def scope_field(scope: dict[str, str] | None) -> bytes:
    return b"" if scope is None else orjson.dumps(scope)


def hash_fields(rec: SessionRecord, expires_at_us: int, cipher: Cipher) -> list[str | bytes]:
    """The WRITE script's field/value arguments for a whole session."""
    extra: list[str | bytes] = state_fields(rec.state, cipher)
    if rec.scope is not None:
        extra += ["scope", scope_field(rec.scope)]
    if rec.revision is not None:
        extra += ["revision", rec.revision]
    return [*extra,
        "user_id", rec.user_id,
        "created_at", str(to_us(rec.created_at)),
        "last_activity", str(to_us(rec.last_activity)),
        "expires_at", str(expires_at_us),
        "total_interactions", str(rec.total_interactions),
        "context", cipher.seal(orjson.dumps(rec.context)),
        "topics", orjson.dumps(rec.topics),
        "version", str(rec.version),
        "merged_from", orjson.dumps(rec.merged_from),
    ]  # fmt: skip


# -- side data (a framework's checkpoints): stored sealed, exported open in base64 ------------


def side_data(
    fields: Mapping[str, bytes], members: Sequence[bytes | str], cipher: Cipher
) -> SideData | None:
    """The export form of a session's side data; None when it has none."""
    if not fields and not members:
        return None
    return SideData(
        fields={
            k: base64.b64encode(cipher.open(v, "side data")).decode() for k, v in fields.items()
        },
        members=[m.decode() if isinstance(m, bytes) else m for m in members],
    )


def side_values(side: SideData, max_bytes: int) -> dict[str, bytes]:
    """The side hash of an export's side data (open); InvalidInput for a value that is not
    base64 or is larger than ``max_bytes``."""
    out = {}
    for k, v in side.fields.items():
        try:
            data = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidInput(f"side data field {k!r} is not base64: {e}") from e
        if len(data) > max_bytes:
            raise InvalidInput(f"side data field {k!r} is {len(data)} bytes; limit {max_bytes}")
        out[k] = data
    return out
