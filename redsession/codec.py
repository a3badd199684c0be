"""Conversions between Redis replies (flat lists of bytes) and the models."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from redsession.crypto import Cipher
from redsession.errors import CorruptData
from redsession.models import Interaction, Session, SessionRecord, from_us, to_us

Reply = Any  # what redis-py hands back: bytes, str, int, lists of those


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def flat_to_dict(flat: Sequence[bytes | str]) -> dict[str, str]:
    it = iter(flat)
    return {text(k): text(v) for k, v in zip(it, it)}


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


_INTERACTIONS = TypeAdapter(list[Interaction])


def decode_interactions(raw: Iterable[bytes | str], cipher: Cipher) -> list[Interaction]:
    records = [cipher.open(r, "an interaction") for r in raw]
    try:
        # One pydantic call for the whole list costs ~15% less than one per record (resume's
        # main client-side cost); the count check catches a record that is not one object.
        items = _INTERACTIONS.validate_json(b"[" + b",".join(records) + b"]")
        if len(items) == len(records):
            return items
        return [Interaction.model_validate_json(r) for r in records]
    except ValidationError as e:
        raise CorruptData(f"an interaction record in Redis is malformed: {e}") from e


def record_from_hash(sid: str, h: dict[str, str], cipher: Cipher) -> SessionRecord:
    try:
        return SessionRecord(
            session_id=sid,
            user_id=h["user_id"],
            created_at=from_us(int(h["created_at"])),
            last_activity=from_us(int(h["last_activity"])),
            total_interactions=int(h["total_interactions"]),
            context=loads(cipher.open(h["context"], "a context"), "context"),
            topics=loads(h["topics"], "topics"),
            version=int(h["version"]),
            merged_from=loads(h["merged_from"], "merged_from"),
        )
    except (KeyError, ValueError) as e:
        raise CorruptData(f"session {sid!r} in Redis is malformed: {e}") from e


def expires_from_hash(sid: str, h: dict[str, str]) -> int:
    try:
        return int(h["expires_at"])
    except (KeyError, ValueError) as e:
        raise CorruptData(f"session {sid!r} in Redis has no valid expires_at") from e


def session_from_hash(
    sid: str, h: dict[str, str], history: list[Interaction], cipher: Cipher
) -> Session:
    rec = record_from_hash(sid, h, cipher)
    return Session(
        **rec.model_dump(),
        expires_at=from_us(expires_from_hash(sid, h)),
        history=history,
    )


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
