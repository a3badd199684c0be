"""The pydantic models: the wire format of exports, dumps, CLI --json output and MCP results."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

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

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        # Every timestamp is stored as µs since the epoch; normalise the zone so that
        # a round trip through Redis compares equal.
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc)
        return value


class Interaction(_Model):
    """One exchange: what the user said, what the assistant answered, and its annotations."""

    id: str = Field(min_length=1, max_length=128)
    timestamp: AwareDatetime
    user_message: str
    assistant_response: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    topics: list[str] = Field(default_factory=list)


class SessionSummary(_Model):
    """What a listing shows of a session."""

    session_id: str
    user_id: str
    total_interactions: int
    created_at: AwareDatetime
    last_activity: AwareDatetime
    expires_at: AwareDatetime


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
    created_at: AwareDatetime
    last_activity: AwareDatetime
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
    expires_at: AwareDatetime


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
    oldest_activity: AwareDatetime | None
    newest_activity: AwareDatetime | None
    expiring_24h: int
