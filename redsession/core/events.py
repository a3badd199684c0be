"""Reading the event stream: pages after an id, filtered by kind; waiting for the next
events; and the cursors and dead letters of the stream's consumers (the webhooks)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from redsession.core.base import Core
from redsession.errors import InvalidInput
from redsession.model import validation as check
from redsession.model.models import EVENT_KINDS, Event, EventPage, from_us
from redsession.storage.commands import Op
from redsession.storage.events import Entry

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000  # per call: bounds one reply
# A read filtered by kind looks at this many pages of the stream at most, then returns what
# it found and where it stopped, so one call stays bounded however rare the kind.
MAX_PAGES = 10
MAX_FIELD = 64 * 1024  # bytes of one dead-letter field (an error message, an id)
_BASE = ("kind", "sid", "uid", "op", "at")  # every event's fields (storage/scripts.py)


def events(
    core: Core, after: str | None, kinds: Collection[str] | None, limit: int
) -> Op[EventPage]:
    """Up to ``limit`` events after ``after`` (exclusive), oldest first, of ``kinds`` only
    (None: all). Unfiltered, one XRANGE."""
    after, wanted, limit = _args(after, kinds, limit)
    found: list[Event] = []
    for _ in range(MAX_PAGES):
        page = yield from core.store.stream.read(after, limit)
        for entry in page:
            after = entry[0]
            event = _decode(entry, wanted)
            if event is not None:
                found.append(event)
                if len(found) == limit:
                    return EventPage(events=found, after=after)
        if len(page) < limit:
            break
    return EventPage(events=found, after=after)


def wait_for_events(
    core: Core, after: str | None, kinds: Collection[str] | None, limit: int, block: float
) -> Op[EventPage]:
    """The events after ``after`` as events() gives them, but when there are none yet, wait
    for them up to ``block`` seconds (XREAD BLOCK; at most half the socket timeout, so the
    wait never looks like a dead connection). The page may be empty, its ``after`` moved on
    past events of other kinds."""
    after, wanted, limit = _args(after, kinds, limit)
    if not isinstance(block, (int, float)) or isinstance(block, bool) or not block > 0:
        raise InvalidInput(f"block must be a positive number of seconds, not {block!r}")
    ms = max(1, int(min(block, core.settings.socket_timeout / 2) * 1000))
    page = yield from core.store.stream.wait(after, limit, ms)
    found = [e for e in (_decode(entry, wanted) for entry in page) if e is not None]
    return EventPage(events=found, after=page[-1][0] if page else after)


def consumer_cursor(core: Core, consumer: str) -> Op[str | None]:
    """The id of the last event ``consumer`` is done with; None before its first."""
    return (yield from core.store.stream.cursor(_consumer(consumer)))


def ack_event(
    core: Core, consumer: str, event_id: str, failed: Mapping[str, str] | None = None
) -> Op[bool]:
    """``consumer`` is done with ``event_id``: its cursor moves there (never back). With
    ``failed`` (what went wrong, e.g. {"error": ..., "attempts": ...} and the event's own
    fields), it gave up on the event: it becomes a dead letter, counted in stats. Once per
    event, however often it is called. False: the cursor was already there or past it."""
    eid = check.event_id(event_id)
    if failed is not None and not isinstance(failed, Mapping):
        raise InvalidInput(f"failed must be a mapping of text to text, not {check.show(failed)}")
    dead = [check.text(a, "a dead letter's field", MAX_FIELD) for kv in (failed or {}).items()
            for a in kv]  # fmt: skip
    if failed is not None and not dead:
        dead = ["error", "unknown"]
    return (yield from core.store.stream.ack(_consumer(consumer), eid, dead))


def _args(
    after: str | None, kinds: Collection[str] | None, limit: int
) -> tuple[str | None, frozenset[str] | None, int]:
    if after is not None:
        after = check.event_id(after)
    wanted = None if kinds is None else check.event_kinds(kinds, EVENT_KINDS)
    limit = check.integer(limit, "limit", 1)
    if limit > MAX_EVENTS:
        raise InvalidInput(f"limit must be at most {MAX_EVENTS}, not {limit}")
    return after, wanted, limit


def _consumer(name: str) -> str:
    return check.text(name, "consumer name", 1024)


def _decode(entry: Entry, wanted: frozenset[str] | None) -> Event | None:
    """The entry as an Event, None if it is not of a ``wanted`` kind (None: any)."""
    eid, f = entry
    if wanted is not None and f.get("kind") not in wanted:
        return None
    try:
        at = int(f["at"])
        base = {k: f[k] for k in _BASE}
    except (KeyError, ValueError):
        # Not one of ours (someone XADDs to the stream by hand): skipped, not fatal, or
        # every reader after it would be stuck on it.
        log.warning("event %s is not an event redsession wrote; skipped: %r", eid, f)
        return None
    extras = {k: v for k, v in f.items() if k not in base}
    return Event(
        id=eid, kind=base["kind"], session_id=base["sid"], user_id=base["uid"],
        time=from_us(at), op_id=base["op"], extras=extras,
    )  # fmt: skip
