"""A mirror run: the sessions changed since the last run, read from the event stream, copied
into SQL (rows.py). Like the dump, a generator of store commands whose SQL I/O is inline.

The run starts after the last event it mirrored (the cursor, kept in the database) and
stops at the stream's newest event as of its start, so it always ends. Each batch of events
names some sessions; each is read once, whole, and written in one transaction, or removed
when Redis no longer has it. The cost is that of the changed sessions, whatever the number
of the others. A database with no cursor, or a stream that dropped events the cursor had
not reached (it keeps Settings.events_maxlen), gets a full copy first: every live session,
then the removal of the rows Redis no longer has.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict

from redsession.core import sessions, transfer
from redsession.core.base import Core
from redsession.errors import ConfigError, CorruptData, InvalidInput, SessionNotFound
from redsession.maintenance.snapshots import Progress
from redsession.mirror.rows import Rows
from redsession.model import validation as check
from redsession.storage.commands import Op

log = logging.getLogger(__name__)

BATCH = 500  # events per read
EMPTY = "0-0"  # the cursor of a copy made while the stream held no event
GONE_KINDS = ("delete", "merge")  # the events after which a missing session is not expired


class MirrorReport(BaseModel):
    """What one mirror run did."""

    model_config = ConfigDict(frozen=True)

    events: int  # events read
    upserted: int  # sessions written
    removed: int  # sessions taken out (deleted, merged away, expired)
    expired: int  # sessions kept but marked expired (Settings.sql_keep_expired)
    users: int  # users whose preferences were written
    full_copy: bool  # the run began with a full copy (a new database, or events dropped)


class _Tally:
    def __init__(self) -> None:
        self.upserted = self.removed = self.expired = self.users = 0


def mirror_sessions(
    core: Core, rows: Rows, *, batch: int = BATCH, progress: Progress = None
) -> Op[MirrorReport]:
    """Bring the SQL mirror up to the stream's newest event as of now."""
    if not core.settings.events_maxlen:
        raise ConfigError(
            "the SQL mirror follows the event stream, which is off: set "
            "REDSESSION_EVENTS_MAXLEN above 0 (or REDSESSION_SQL_MIRROR=false)"
        )
    tally = _Tally()
    end = yield from core.store.stream_end()
    cursor = rows.cursor()
    full = cursor is None or (yield from _lost(core, end, cursor))
    if full and cursor is not None:
        log.warning("the event stream lacks events the SQL mirror had not read (trimmed, "
                    "or another Redis): copying every session")  # fmt: skip
    if cursor is None or full:
        cursor = end or EMPTY
        yield from _full_copy(core, rows, tally, progress)
        rows.set_cursor(cursor)
    events = 0
    while end is not None:
        page = yield from core.store.events_after(cursor, end, batch)
        if not page:
            break
        events += len(page)
        changed: dict[str, str] = {}  # session id -> its last event's kind
        users: set[str] = set()
        for _, fields in page:
            sid, kind = fields.get("sid", ""), fields.get("kind", "")
            # A merge's one event names both sides: the secondary gone, the primary grown.
            for one, its_kind in ((sid, kind), (fields.get("into", ""), "")):
                if one:
                    changed.pop(one, None)  # keeps the ids in the order of their last event
                    changed[one] = its_kind
            if kind == "prefs" and fields.get("uid"):
                users.add(fields["uid"])
        for sid, kind in changed.items():
            yield from _mirror_one(core, rows, tally, sid, kind)
        for uid in sorted(users):
            yield from _preferences(core, rows, tally, uid)
        cursor = page[-1][0]
        rows.set_cursor(cursor)
        if progress is not None:
            progress(len(page))
        if len(page) < batch:
            break
    return MirrorReport(
        events=events, upserted=tally.upserted, removed=tally.removed, expired=tally.expired,
        users=tally.users, full_copy=full,
    )  # fmt: skip


def _lost(core: Core, end: str | None, cursor: str) -> Op[bool]:
    """Whether events after ``cursor`` may be missing: the stream no longer holds the cursor's
    own event (it was trimmed away, or this is another Redis's stream)."""
    if cursor == EMPTY:  # copied while the stream was empty: every event came after
        return False
    if end is None:  # no stream: an emptied Redis, or another one
        return True
    return not (yield from core.store.has_event(cursor))


def _mirror_one(core: Core, rows: Rows, tally: _Tally, sid: str, kind: str) -> Op[None]:
    """Copy one session as Redis has it now, or take it out of SQL if Redis has it no more."""
    try:
        doc = yield from transfer.export(core, sid, None, follow_merged=False)
    except InvalidInput:  # not a session id redsession writes: nothing to mirror
        log.warning("SQL mirror: skipping the event of invalid session id %r", sid)
        return
    except SessionNotFound:  # deleted, merged away (a subclass), or expired
        _gone(core, rows, tally, [sid], expired=kind not in GONE_KINDS)
        return
    except CorruptData as e:  # said, and left as it was in SQL: the rest goes on
        log.warning("SQL mirror: session %r not copied: %s", sid, e)
        return
    rows.upsert(doc)
    tally.upserted += 1


def _gone(core: Core, rows: Rows, tally: _Tally, sids: list[str], *, expired: bool) -> None:
    if expired and core.settings.sql_keep_expired:
        tally.expired += rows.mark_expired(sids)
    else:
        tally.removed += rows.remove(sids)


def _preferences(core: Core, rows: Rows, tally: _Tally, uid: str) -> Op[None]:
    try:
        stored = yield from core.store.get_prefs(check.user_id(uid))
    except InvalidInput:  # not a user id redsession writes
        log.warning("SQL mirror: skipping the event of invalid user id %r", uid)
        return
    rows.preferences(uid, stored)
    tally.users += 1


def _full_copy(core: Core, rows: Rows, tally: _Tally, progress: Progress) -> Op[None]:
    """Every live session and every user's preferences; then out with what Redis lacks."""
    seen: set[str] = set()
    walk = sessions.session_walk(core, None)
    while not walk.done:
        page = yield from walk.next_page()
        for sid in page:
            yield from _mirror_one(core, rows, tally, sid, "")
        seen.update(page)
        if progress is not None and page:
            progress(len(page))
    # What the mirror holds and Redis does not: gone while no event reached the mirror.
    _gone(core, rows, tally, sorted(rows.session_ids() - seen), expired=True)
    # Preferences may outlive their user's sessions: those of users with none are kept.
    walk = sessions.user_walk(core)
    while not walk.done:
        for uid in (yield from walk.next_page()):
            yield from _preferences(core, rows, tally, uid)
