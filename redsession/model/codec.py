"""Conversions between what the store holds (records, hash fields) and the models."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, cast

import msgspec
import orjson
from pydantic import ValidationError

from redsession.errors import CorruptData
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


def loads(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CorruptData(f"{what} in Redis is not valid JSON: {e}") from e


def encode_interaction(
    i: Interaction, cipher: Cipher, metadata_json: bytes | None = None
) -> bytes:
    """The stored record: the interaction as JSON, sealed when encryption is on.

    ``metadata_json``, when the caller already encoded the metadata (to check its size),
    is spliced in as is rather than encoded a second time.
    """
    return cipher.seal(_interaction_json(i, metadata_json))


def _interaction_json(i: Interaction, metadata_json: bytes | None) -> bytes:
    metadata = i.metadata if metadata_json is None else orjson.Fragment(metadata_json)
    return orjson.dumps(
        {
            "id": i.id,
            "timestamp": i.timestamp,
            "user_message": i.user_message,
            "assistant_response": i.assistant_response,
            "metadata": metadata,
            "topics": i.topics,
        },
        option=orjson.OPT_UTC_Z,
    )


# -- reading back what the store wrote -----------------------------------------------------
#
# Reads return the models without a second pydantic validation (resume's main cost): stored
# records are validated against _StoredInteraction by msgspec, in C, at the cost of a plain
# JSON parse, and the models are built from the result. A record that does not pass (another
# shape, a non-UTC zone, or corruption) takes the full pydantic path, which normalises it or
# says what is wrong (CorruptData).

_UTC = timezone.utc
_SESSION_KEYS = tuple(Session.model_fields)


class _StoredInteraction(msgspec.Struct, forbid_unknown_fields=True):
    """models.Interaction's fields and constraints, as msgspec types (a test holds the two to
    accepting the same records with the same result)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    user_message: str
    assistant_response: str | None = None
    metadata: dict[str, Any] = {}
    topics: list[str] = []


_RECORDS = msgspec.json.Decoder(list[_StoredInteraction])
_asdict = msgspec.structs.asdict


def decode_interactions(raw: Sequence[bytes | str], cipher: Cipher) -> list[Interaction]:
    if cipher.enabled or (raw and type(raw[0]) is not bytes):
        # open() decrypts, and turns the str of a decode_responses client into bytes.
        records = [cipher.open(r, "an interaction") for r in raw]
    else:
        # Records as stored: a token among them fails the parse and takes the careful
        # path, which says that a key is missing.
        records = cast("list[bytes]", raw)
    try:
        stored = _RECORDS.decode(b"[" + b",".join(records) + b"]")
    except msgspec.DecodeError:  # also msgspec.ValidationError
        stored = None
    if stored is not None and len(stored) == len(records):
        items = [trusted(Interaction, _asdict(s)) for s in stored]
        if all(i.timestamp.tzinfo is _UTC for i in items):
            return items
    return _validate_interactions(raw, cipher)


def _validate_interactions(raw: Sequence[bytes | str], cipher: Cipher) -> list[Interaction]:
    try:
        return [Interaction.model_validate_json(cipher.open(r, "an interaction")) for r in raw]
    except ValidationError as e:
        raise CorruptData(f"an interaction record in Redis is malformed: {e}") from e


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
    return trusted(SessionRecord, _record_values(sid, h, cipher))


def expires_from_hash(sid: str, h: dict[str, str]) -> int:
    try:
        return int(h["expires_at"])
    except (KeyError, ValueError) as e:
        raise CorruptData(f"session {sid!r} in Redis has no valid expires_at") from e


def session_from_hash(
    sid: str, h: dict[str, str], history: list[Interaction], cipher: Cipher
) -> Session:
    values = _record_values(sid, h, cipher)
    values["expires_at"] = from_us(expires_from_hash(sid, h))
    values["history"] = history
    return trusted(Session, {k: values[k] for k in _SESSION_KEYS})  # field order: JSON's order


def summary_from_row(sid: str, row: dict[str, str]) -> SessionSummary:
    """A listing's row: the SUMMARY_FIELDS of a session hash."""
    try:
        return trusted(SessionSummary, {
            "session_id": sid,
            "user_id": row["user_id"],
            "total_interactions": int(row["total_interactions"]),
            "created_at": from_us(int(row["created_at"])),
            "last_activity": from_us(int(row["last_activity"])),
            "expires_at": from_us(int(row["expires_at"])),
        })  # fmt: skip
    except (KeyError, ValueError, OverflowError) as e:
        raise CorruptData(f"session {sid!r} in Redis is malformed: {e}") from e


def hash_fields(rec: SessionRecord, expires_at_us: int, cipher: Cipher) -> list[str | bytes]:
    """The WRITE script's field/value arguments for a whole session."""
    return [
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
