"""The pydantic models: the wire format of exports, dumps, CLI --json output and MCP results."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

EXPORT_FORMAT = "redsession.session"
EXPORT_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    """A UTC-aware datetime as integer microseconds since the epoch (exact, no float)."""
    return (dt - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=_Model)
_new = object.__new__
_set = object.__setattr__


def trusted(cls: type[M], values: dict[str, Any]) -> M:
    """An instance holding ``values`` as they are, without validation.

    For values already checked: a new interaction's (log_interaction checks each part) or
    what the codec reads back from the store, which it checks its own, faster way: a second
    pydantic validation was resume's main cost. ``values`` must name every
    field, in the model's field order (serialisation follows it). The result is what
    ``cls.model_construct(**values)`` builds (a test holds it to that), at a tenth of the cost.
    """
    m = _new(cls)
    _set(m, "__dict__", values)
    _set(m, "__pydantic_fields_set__", set(values))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m


# Every timestamp is stored as µs since the epoch; normalise the zone so that a round trip
# through Redis compares equal. Only on timestamp fields: a "*" validator would be a Python
# call on every field of every record (measurable on resume).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda v: v.astimezone(timezone.utc))]


class Interaction(_Model):
    """One exchange: what the user said, what the assistant answered, and its annotations."""

    id: str = Field(min_length=1, max_length=128)
    timestamp: UtcDatetime
    user_message: str
    assistant_response: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    topics: list[str] = Field(default_factory=list)


class SessionSummary(_Model):
    """What a listing shows of a session."""

    session_id: str
    user_id: str
    total_interactions: int
    created_at: UtcDatetime
    last_activity: UtcDatetime
    expires_at: UtcDatetime


class Session(SessionSummary):
    """A session's state, with its newest interactions in ``history`` (oldest first)."""

    context: dict[str, Any] = Field(default_factory=dict)
    topics: list[str] = Field(default_factory=list)
    version: int = 0
    merged_from: list[str] = Field(default_factory=list)
    history: list[Interaction] = Field(default_factory=list)


class SessionRecord(_Model):
    """The session part of an export: everything but the history and the expiry."""

    session_id: str
    user_id: str
    created_at: UtcDatetime
    last_activity: UtcDatetime
    total_interactions: int = Field(ge=0)
    context: dict[str, Any] = Field(default_factory=dict)
    topics: list[str] = Field(default_factory=list)
    version: int = Field(default=0, ge=0)
    merged_from: list[str] = Field(default_factory=list)


class SessionExport(_Model):
    """The versioned export document; also the format of every dump file."""

    format: Literal["redsession.session"] = "redsession.session"
    version: Literal[1] = 1
    session: SessionRecord
    interactions: list[Interaction]
    expires_at: UtcDatetime


class SessionPage(_Model):
    """One page of a listing; pass ``next_cursor`` back to get the next page."""

    sessions: list[SessionSummary]
    next_cursor: str | None = None


class StoreStats(_Model):
    """What `redsession stats` reports."""

    sessions: int
    users: int
    interactions: int
    redis_used_memory: int
    oldest_activity: UtcDatetime | None
    newest_activity: UtcDatetime | None
    expiring_24h: int
