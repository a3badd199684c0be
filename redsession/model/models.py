"""The pydantic models: the wire format of exports, dumps, CLI --json output and MCP results."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EXPORT_FORMAT = "redsession.session"
EXPORT_VERSION = 2
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
_new, _set = object.__new__, object.__setattr__


def built(cls: type[M], values: dict[str, Any]) -> M:
    """A model of ``values`` that are already checked against its fields' types (every field
    given): the model without a second validation of the same data. It is what pydantic's
    model_construct makes, without its per-field Python loop (these models have no aliases,
    private attributes or post-init hooks); tests/test_validation.py holds the two equal."""
    m = _new(cls)
    _set(m, "__dict__", values)
    _set(m, "__pydantic_fields_set__", set(values))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m


class Interaction(_Model):
    """One exchange: what the user said, what the assistant answered, and its annotations."""

    kind: Literal["interaction"] = "interaction"
    # Checked where ids come in (validation.entry_id: appends, imports), not on every read.
    id: str
    timestamp: AwareDatetime
    user_message: str
    assistant_response: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    topics: list[str] = Field(default_factory=list)


class Item(_Model):
    """One framework item (a message with a role, a tool call or result, an event), as given.

    ``item`` is opaque to redsession: it comes back equal to what was appended, key order
    included. Read through a framework, an Interaction is two items (user, then assistant).
    """

    kind: Literal["item"] = "item"
    id: str  # as Interaction.id
    timestamp: AwareDatetime
    item: dict[str, Any]


# One entry of a session's history, oldest first: an interaction or a framework item.
Entry = Annotated[Interaction | Item, Field(discriminator="kind")]


def interactions_of(history: list[Interaction | Item]) -> list[Interaction]:
    return [e for e in history if isinstance(e, Interaction)]


def interaction_items(i: Interaction) -> list[dict[str, Any]]:
    """An interaction as a framework reads it: the user's message, then the assistant's.

    Chat-message items in the form most frameworks take as input ({"role", "content"});
    each adapter turns them into its own types (an ADK event, say).
    """
    items: list[dict[str, Any]] = [{"role": "user", "content": i.user_message}]
    if i.assistant_response is not None:
        items.append({"role": "assistant", "content": i.assistant_response})
    return items


def item_text(item: dict[str, Any]) -> tuple[str, str]:
    """(role, text) of an item for a person to read: the CLI's show, the dashboard.

    Knows the common shapes (a "role" or "type", or ADK's "author"; a "content" string, a
    list of parts with "text", ADK's content.parts); anything else is shown as JSON.
    """
    role = item.get("role") or item.get("author") or item.get("type") or "item"
    content = item.get("content")
    if isinstance(content, dict):  # ADK: {"role", "parts": [{"text"}, ...]}
        content = content.get("parts")
    if isinstance(content, str):
        return str(role), content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        if any(isinstance(t, str) for t in texts):
            return str(role), "\n".join(t for t in texts if isinstance(t, str))
    return str(role), orjson.dumps(item).decode()


def as_items(history: list[Interaction | Item]) -> list[dict[str, Any]]:
    """The history as a framework reads it, oldest first (see interaction_items)."""
    out: list[dict[str, Any]] = []
    for e in history:
        if isinstance(e, Item):
            out.append(e.item)
        else:
            out.extend(interaction_items(e))
    return out


class SessionSummary(_Model):
    """What a listing shows of a session."""

    session_id: str
    user_id: str
    total_interactions: int  # entries in the history: interactions and items
    created_at: AwareDatetime
    last_activity: AwareDatetime
    expires_at: AwareDatetime


class Session(SessionSummary):
    """A session's state, with its newest history entries in ``history`` (oldest first)."""

    context: dict[str, Any] = Field(default_factory=dict)
    topics: list[str] = Field(default_factory=list)
    version: int = 0
    merged_from: list[str] = Field(default_factory=list)
    state: dict[str, Any] = Field(default_factory=dict)
    scope: dict[str, str] | None = None
    revision: str | None = None
    history: list[Entry] = Field(default_factory=list)

    @property
    def interactions(self) -> list[Interaction]:
        """The interactions of ``history`` (its framework items left out), typed as such."""
        return interactions_of(self.history)


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
    # A framework's state, key by key (ADK's session state); set with the history it
    # belongs to, in the same script.
    state: dict[str, Any] = Field(default_factory=dict)
    # The scope a framework gave the session (ADK's app, user and id), so an export keeps it.
    scope: dict[str, str] | None = None
    # The revision a framework's compare-and-set writes check (pydantic-ai's), when it has one.
    revision: str | None = None


class SideData(_Model):
    """A session's side data (a framework's checkpoints: storage/checkpoints.py) as an
    export carries it: the side hash's fields, each value in base64 (open: an export holds
    what encryption sealed in the clear, as it does the history), and the members of the
    side index, which order them."""

    fields: dict[str, str] = Field(default_factory=dict)
    members: list[str] = Field(default_factory=list)


class SessionExport(_Model):
    """The versioned export document; also the format of every dump file.

    Version 2 holds the whole history, interactions and items in order; version 1 documents
    (interactions only) still import (SessionExportV1).
    """

    format: Literal["redsession.session"] = "redsession.session"
    version: Literal[2] = 2
    session: SessionRecord
    history: list[Entry]
    expires_at: AwareDatetime
    # Optional in version 2: documents written before side data, and sessions with none.
    side: SideData | None = None

    @property
    def interactions(self) -> list[Interaction]:
        return interactions_of(self.history)


class SessionExportV1(_Model):
    """The export document before framework items: read, never written."""

    format: Literal["redsession.session"] = "redsession.session"
    version: Literal[1] = 1
    session: SessionRecord
    interactions: list[Interaction]
    expires_at: AwareDatetime

    def upgrade(self) -> SessionExport:
        return SessionExport(
            session=self.session, history=list(self.interactions), expires_at=self.expires_at
        )


class SessionPage(_Model):
    """One page of a listing; pass ``next_cursor`` back to get the next page."""

    sessions: list[SessionSummary]
    next_cursor: str | None = None


class UserPage(_Model):
    """One page of users in name order; pass ``next_cursor`` back to get the next page."""

    users: list[str]
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
    # The event stream: its length, and the events webhook delivery gave up on (all time).
    events: int = 0
    webhook_dead_letters: int = 0


# What the write scripts put on the event stream (storage/scripts.py, checkpoints.py);
# "expire" comes from cleanup, "resume" only with Settings.events_resume.
EVENT_KINDS = (
    "create", "log", "history", "context", "prefs", "side", "delete", "merge", "import",
    "restore", "rotate", "expire", "resume",
)  # fmt: skip


class Event(_Model):
    """One entry of the event stream: who changed which session, how, and when; never text.

    ``id`` is the stream entry's id (``<ms>-<seq>``): pass it as ``after`` to read on from
    there. ``extras`` holds a kind's own fields (a merge's ``into``: the primary's id).
    A kind this version does not know still reads, as its name.
    """

    id: str
    kind: str
    session_id: str
    user_id: str
    time: AwareDatetime
    op_id: str
    extras: dict[str, str] = Field(default_factory=dict)


class EventPage(_Model):
    """Events oldest first; ``after``: the id to read on from (None: nothing was read yet).

    ``after`` may lie past the last event shown when kinds were filtered out."""

    events: list[Event]
    after: str | None = None


class JobRun(_Model):
    """The last run of one worker job, as the worker recorded it."""

    job: str
    at: AwareDatetime
    ok: bool
    seconds: float
    outcome: str  # what it did, or why it failed


class WorkerStatus(_Model):
    """Who leads the workers (from its heartbeat, None when no leader lives) and the last
    run of each job."""

    leader: str | None = None
    host: str | None = None
    pid: int | None = None
    heartbeat_at: AwareDatetime | None = None
    jobs: dict[str, JobRun] = Field(default_factory=dict)


class Overview(_Model):
    """Figures every service reports (/metrics, the dashboard), each O(1) to read."""

    sessions: int
    users: int
    redis_used_memory: int
    expiring_24h: int
    worker: WorkerStatus


class DayFigures(_Model):
    """One UTC day of the analytics rollup."""

    day: date
    active_sessions: int  # HyperLogLog estimates: exact to ~1 % at any size
    active_users: int
    new_users: int  # met for the first time that day; the rest of active_users returned
    interactions: int
    created: int


class MemorySample(_Model):
    at: AwareDatetime  # the hour the sample belongs to
    used_memory: int


class Analytics(_Model):
    """The dashboard's analytics: per-day figures from the rollup, and shapes from a sample."""

    days: list[DayFigures] = Field(description="Oldest first, one per day.")
    memory: list[MemorySample] = Field(description="Redis used_memory, one per hour sampled.")
    sampled: int = Field(description="How many live sessions the distribution and topics read.")
    interactions_per_session: dict[str, int] = Field(description="Bucket -> sessions.")
    top_topics: list[tuple[str, int]] = Field(description="(topic, sessions), most first.")
    expiring_24h: int
