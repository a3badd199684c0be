"""Conversions between what the store holds (records, hash fields) and the models."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from redsession.errors import CorruptData
from redsession.model.crypto import Cipher
from redsession.model.models import (
    Entry,
    Interaction,
    Item,
    Session,
    SessionRecord,
    SessionSummary,
    from_us,
    to_us,
)
from redsession.model.validation import problems

# -- history records ------------------------------------------------------------------------
#
# One record of a session's history log (a Redis LIST, oldest first) is
#
#     TIME " " ID " " KIND " " BODY
#
# TIME  the entry's time, UTC, as 2026-12-02T16:48:00.123456Z: always 27 bytes, so that the
#       Lua scripts compare times as strings (reading the items after a time, interleaving a
#       merge) without decoding anything;
# ID    the entry's id ([A-Za-z0-9_-]{1,128}, like a session id);
# KIND  "i" for an interaction, "m" for a framework item;
# BODY  JSON, sealed as a Fernet token when encryption is on: for an interaction its
#       user_message, assistant_response, metadata and topics; for an item the item itself.
#
# Time, id and kind stay in the clear, as ids, owners and timestamps do in the session hash.
# Records written before framework items (no header: a JSON object or a token of one holding
# every Interaction field) are still read. Reads rebuild each entry's JSON around the body and
# validate the whole history in one pydantic call (in Rust), so the models are the one
# definition of what a stored entry may hold.

M = TypeVar("M", bound=BaseModel)
TIME_BYTES = 27
INTERACTION, ITEM = b"i", b"m"
_HISTORY: TypeAdapter[list[Interaction | Item]] = TypeAdapter(list[Entry])


def loads(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CorruptData(f"{what} in Redis is not valid JSON: {e}") from e


def record_time(dt: datetime) -> bytes:
    """A record's TIME field: fixed width, so byte order is time order."""
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")[:26].encode() + b"Z"


def _record(dt: datetime, rid: str, kind: bytes, body: bytes, cipher: Cipher) -> bytes:
    return b" ".join((record_time(dt), rid.encode(), kind, cipher.seal(body)))


def encode_interaction(
    i: Interaction, cipher: Cipher, metadata_json: bytes | None = None
) -> bytes:
    """The stored record of an interaction.

    ``metadata_json``, when the caller already encoded the metadata (to check its size),
    is spliced in as is rather than encoded a second time.
    """
    metadata = i.metadata if metadata_json is None else orjson.Fragment(metadata_json)
    body = orjson.dumps({
        "user_message": i.user_message, "assistant_response": i.assistant_response,
        "metadata": metadata, "topics": i.topics,
    })  # fmt: skip
    return _record(i.timestamp, i.id, INTERACTION, body, cipher)


def encode_item(rid: str, at: datetime, item_json: bytes, cipher: Cipher) -> bytes:
    """The stored record of a framework item, given as its (checked) JSON."""
    return _record(at, rid, ITEM, item_json, cipher)


def encode_entry(e: Interaction | Item, cipher: Cipher) -> bytes:
    """The stored record of any history entry (imports, merges and rewrites)."""
    if isinstance(e, Interaction):
        return encode_interaction(e, cipher)
    return encode_item(e.id, e.timestamp, orjson.dumps(e.item), cipher)


def sealed_body(rec: bytes | str) -> bytes:
    """The part of a record that encryption seals: the body (the whole of an old record)."""
    raw = rec.encode() if isinstance(rec, str) else rec
    return raw.split(b" ", 3)[3] if raw[:1].isdigit() else raw


def decode_history(raw: Sequence[bytes | str], cipher: Cipher) -> list[Interaction | Item]:
    """The entries of these records, oldest first; CorruptData if one does not decode."""
    parts = []
    for r in raw:
        rec = r.encode() if isinstance(r, str) else r
        if rec[:1].isdigit():
            head = rec.split(b" ", 3)
            if len(head) < 4:
                raise CorruptData(f"a history record in Redis is malformed: {rec[:60]!r}")
            ts, rid, kind, sealed = head
            body = cipher.open(sealed, "a history entry")
            if kind == INTERACTION:  # the body's fields follow the header's
                parts.append(b'{"kind":"interaction","id":"%s","timestamp":"%s",%s'
                             % (rid, ts, body[1:]))  # fmt: skip
            elif kind == ITEM:
                parts.append(b'{"kind":"item","id":"%s","timestamp":"%s","item":%s}'
                             % (rid, ts, body))  # fmt: skip
            else:
                raise CorruptData(f"a history record in Redis has an unknown kind {kind!r}")
        else:  # written before framework items: a whole Interaction
            body = cipher.open(rec, "an interaction")
            parts.append(b'{"kind":"interaction",' + body[1:] if body[:1] == b"{" else body)
    try:
        return _HISTORY.validate_json(b"[" + b",".join(parts) + b"]")
    except ValidationError as e:
        raise CorruptData(f"a history record in Redis is malformed: {e}") from e


def _record_values(sid: str, h: dict[str, str], cipher: Cipher) -> dict[str, Any]:
    """A SessionRecord's fields, in its field order, from a session hash."""
    try:
        values = {
            "session_id": sid,
            "user_id": h["user_id"],
            "created_at": from_us(int(h["created_at"])),
            "last_activity": from_us(int(h["last_activity"])),
            "total_interactions": int(h["total_interactions"]),
            "context": loads(cipher.open(h["context"], "a context"), "context"),
            "topics": loads(h["topics"], "topics"),
            "version": int(h["version"]),
            "merged_from": loads(h["merged_from"], "merged_from"),
            "state": {
                k[len(STATE) :]: loads(cipher.open(v, "session state"), "session state")
                for k, v in h.items()
                if k.startswith(STATE)
            },
            "scope": loads(h["scope"], "scope") if "scope" in h else None,
        }
    except (KeyError, ValueError, OverflowError) as e:
        raise CorruptData(f"session {sid!r} in Redis is malformed: {e}") from e
    except CorruptData as e:  # a JSON field that does not parse
        raise CorruptData(f"session {sid!r}: {e}") from e
    if (
        type(values["context"]) is not dict
        or not _str_list(values["topics"])
        or not _str_list(values["merged_from"])
    ):
        raise CorruptData(f"session {sid!r} in Redis is malformed: a JSON field has the wrong type")
    return values


def _str_list(value: object) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def record_from_hash(sid: str, h: dict[str, str], cipher: Cipher) -> SessionRecord:
    return _validated(SessionRecord, sid, _record_values(sid, h, cipher))


def _validated(cls: type[M], sid: str, values: dict[str, Any]) -> M:
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        raise CorruptData(f"session {sid!r} in Redis is malformed: {problems(e)}") from e


def expires_from_hash(sid: str, h: dict[str, str]) -> int:
    try:
        return int(h["expires_at"])
    except (KeyError, ValueError) as e:
        raise CorruptData(f"session {sid!r} in Redis has no valid expires_at") from e


def session_from_hash(
    sid: str, h: dict[str, str], history: list[Interaction | Item], cipher: Cipher
) -> Session:
    values = _record_values(sid, h, cipher)
    values["expires_at"] = from_us(expires_from_hash(sid, h))
    values["history"] = history  # models already: pydantic takes them as they are
    return _validated(Session, sid, values)


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
