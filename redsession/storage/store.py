"""The session store's Redis operations: session scripts, listings, preferences and stats.

Each operation is a generator of commands (commands.py) that a driver runs. The modules of
redsession/storage/ are the only ones that speak Redis commands (the worker's lock and the
server launcher aside).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from redsession.config import Settings
from redsession.errors import (
    PermissionDenied,
    SessionExists,
    SessionMerged,
    SessionNotFound,
)
from redsession.storage import indexes, scripts
from redsession.storage.commands import (
    Arg,
    Batch,
    Eval,
    OnEachPrimary,
    Op,
    Reply,
    Script,
    hash_reply,
    int_score,
    raw_hash,
    raw_pairs,
    text,
)
from redsession.storage.events import EventStream
from redsession.storage.indexes import members, scored
from redsession.storage.keys import Keys
from redsession.storage.upkeep import IndexUpkeep

SUMMARY_FIELDS = ("user_id", "created_at", "last_activity", "total_interactions", "expires_at")


class Stamp(NamedTuple):
    """The times a write carries: activity score, new expiry, and now (all µs), and the
    operation id of the call ('' for a read). A named tuple, as the commands are (built on
    every call)."""

    activity: int
    expires: int
    now: int
    op: str = ""


class Revision(NamedTuple):
    """A revision check on a write: the revision the caller read (None: the session must not
    exist yet) and the one the write sets. The session hash keeps it as 'revision'."""

    expected: str | None
    new: str

    def args(self) -> tuple[str, str]:
        return ("new" if self.expected is None else "=" + self.expected), self.new


class Side(NamedTuple):
    """A session's side data as stored: the side hash (field names as text, values as
    stored) and the members of its index, which order its fields for range reads."""

    fields: dict[str, bytes]
    members: list[Reply]


class Store:
    """The Redis operations of the session store, as generators of commands."""

    def __init__(self, keys: Keys, settings: Settings, *, cluster: bool = False) -> None:
        self.keys = keys
        self.cluster = cluster
        self.upkeep = IndexUpkeep(keys)
        self.stream = EventStream(keys, settings.events_maxlen)  # reading it (events.py)
        self._prefs_ms = int(settings.preferences_ttl.total_seconds() * 1000)
        self._tomb_ms = int(settings.session_ttl.total_seconds() * 1000)
        self._events = settings.events_maxlen
        self._resume_events = settings.events_resume
        self._op_window_ms = int(settings.op_window.total_seconds() * 1000)
        # '' tells the scripts to leave the indexes to the second step (their keys sit in
        # other slots than the session's on a cluster).
        self._prefix = "" if cluster else keys.prefix

    # -- session scripts ---------------------------------------------------------------

    def _eval(
        self, script: Script, sid: str, owner: str | None, t: Stamp, *extra: Arg, key: str = "",
        readonly: bool = False,
    ) -> Eval:  # fmt: skip
        """A session script (``key``: another key run on the session prelude; ``readonly``:
        this call writes nothing, see Eval)."""
        active = "" if t.activity == t.now else t.activity
        return Eval(
            script,
            (key or self.keys.session(sid),),
            (
                self._prefix, t.now, active, t.expires, self._prefs_ms, owner or "", *extra,
                self._events, self._op_window_ms, t.op,
            ),
            readonly,
        )  # fmt: skip

    def _run(
        self, script: Script, sid: str, owner: str | None, t: Stamp, *extra: Arg,
        readonly: bool = False,
    ) -> Op[list[Reply]]:  # fmt: skip
        """Run a session script; raise what its status says, return the rest of the reply."""
        reply: list[Reply] = yield self._eval(script, sid, owner, t, *extra, readonly=readonly)
        status = text(reply[0])
        if status == "exists":
            raise SessionExists(f"session {sid!r} already exists (or was deleted or merged)")
        if status == "denied":
            raise PermissionDenied(sid)
        if status == "gone":
            raise tombstone_error(sid, text(reply[1]))
        if status == "missing":
            raise SessionNotFound(sid)
        return [status, *reply[1:]]

    def create(
        self, sid: str, uid: str, context: bytes, created: int, t: Stamp,
        scope: bytes = b"", state: Sequence[bytes | str] = (), reuse_deleted: bool = False,
    ) -> Op[int]:  # fmt: skip
        """A new session; ``state`` is field/value pairs ("state:<key>", sealed JSON).
        ``reuse_deleted``: the id may be one this user deleted (see scripts.CREATE).
        Returns its creation time: ``created``, or the first call's for a repeated one."""
        reuse = "1" if reuse_deleted else "0"
        _, first = yield from self._run(
            scripts.CREATE, sid, None, t, uid, context, created, scope, reuse, *state
        )
        yield from self._index(sid, uid, t, created=True)
        yield from self._event("create", sid, uid, t)
        return int(first)

    def fetch(
        self, sid: str, owner: str | None, t: Stamp, *, touch: bool, history: int,
        slide: bool = False,
    ) -> Op[tuple[dict[str, bytes], list[Reply]]]:  # fmt: skip
        """The session hash (field names as text, values as stored) and its newest
        ``history`` records (-1: all of them). ``touch`` counts the read as activity;
        ``slide`` only slides the expiry (the listings' order stays)."""
        h, hist, _ = yield from self.fetch_all(
            sid, owner, t, touch=touch, history=history, slide=slide
        )
        return h, hist

    def fetch_all(
        self, sid: str, owner: str | None, t: Stamp, *, touch: bool = False, history: int = -1,
        side: bool = False, slide: bool = False,
    ) -> Op[tuple[dict[str, bytes], list[Reply], Side | None]]:  # fmt: skip
        """``fetch``, and with ``side`` the side data too (see Side), in the same step."""
        mode = ("2" if self._resume_events else "1") if touch else "3" if slide else "0"
        reply = yield from self._run(
            scripts.FETCH, sid, owner, t, mode, history, "1" if side else "0", readonly=mode == "0"
        )
        flat, hist = reply[1], reply[2]
        data = Side(raw_hash(reply[3][0]), list(reply[3][1])) if side else None
        h = raw_hash(flat)
        if touch:
            yield from self._index(sid, text(h["user_id"]), t)
            if self._resume_events:
                yield from self._event("resume", sid, text(h["user_id"]), t)
        elif slide:
            kept = Stamp(int(h["last_activity"]), t.expires, t.now)
            yield from self._index(sid, text(h["user_id"]), kept)
        return h, hist, data

    def history(
        self, sid: str, owner: str | None, t: Stamp, limit: int | None, before: int | None,
        *, touch: bool = False,
    ) -> Op[list[Reply]]:  # fmt: skip
        """The newest ``limit`` records (None: all) of those at positions before ``before``."""
        _, uid, _, records = yield from self._run(
            scripts.HISTORY, sid, owner, t, "1" if touch else "0",
            "" if limit is None else limit, "" if before is None else before, readonly=not touch,
        )  # fmt: skip
        if touch:
            yield from self._index(sid, text(uid), t)
        return list(records)

    def after(
        self, sid: str, owner: str | None, t: Stamp, since: bytes, floor: bytes, *, touch: bool
    ) -> Op[list[Reply]]:
        """The records whose time is ``since`` or later (see scripts.AFTER for ``floor``)."""
        _, uid, records = yield from self._run(
            scripts.AFTER, sid, owner, t, "1" if touch else "0", since, floor, readonly=not touch
        )
        if touch:
            yield from self._index(sid, text(uid), t)
        return list(records)

    def entry(self, sid: str, owner: str | None, t: Stamp, rid: str) -> Op[bytes | None]:
        """The record whose id is ``rid``, or None (see scripts.ENTRY)."""
        reply = yield from self._run(scripts.ENTRY, sid, owner, t, rid, readonly=True)
        return reply[2] if len(reply) > 2 else None

    def append(
        self, sid: str, owner: str | None, records: Sequence[bytes], topics: Sequence[str],
        max_topics: int, t: Stamp, create_for: str | None = None, scope: bytes = b"",
        state: Sequence[bytes | str] = (), revision: Revision | None = None,
    ) -> Op[tuple[str, int, bytes]]:  # fmt: skip
        """Append records (and set ``state`` fields with them); returns (status, log length,
        the time in the first record stored: another than this call's for a repeated
        operation). Status 'limit': too many topics; 'conflict': not the ``revision``
        expected.

        ``create_for``: create the session for that user (with ``scope``) when it does not
        exist; it never resurrects a deleted or merged one (but see scripts.APPEND for a
        revision-checked create).
        """
        want, new = ("", "") if revision is None else revision.args()
        reply = yield from self._run(
            scripts.APPEND, sid, owner, t, max_topics, len(records), *records,
            create_for or "", scope, len(state), *state, want, new, *topics,
        )  # fmt: skip
        if reply[0] == "limit":
            return "limit", int(reply[1]), b""
        if reply[0] == "conflict":
            return "conflict", 0, b""
        uid, created = text(reply[1]), bool(int(reply[3]))
        yield from self._index(sid, uid, t, created=created)
        if created:
            yield from self._event("create", sid, uid, t)
        yield from self._event("log", sid, uid, t)
        return "ok", int(reply[2]), text(reply[4]).encode()

    def pop(
        self, sid: str, owner: str | None, t: Stamp, expect: bytes = b"", replace: bytes = b""
    ) -> Op[tuple[str, bytes | None]]:
        """Take the newest record off (see scripts.POP): (status, the record or None)."""
        reply = yield from self._run(scripts.POP, sid, owner, t, expect, replace)
        status = reply[0]
        if status == "ok":
            yield from self._index(sid, text(reply[1]), t)
            yield from self._event("history", sid, text(reply[1]), t)
            return "ok", reply[2]
        return status, reply[1] if status == "interaction" else None

    def replace_history(
        self, sid: str, owner: str | None, records: Sequence[bytes], t: Stamp
    ) -> Op[int]:
        """Make ``records`` the whole history, atomically; returns its length."""
        _, uid, n = yield from self._run(scripts.REPLACE_HISTORY, sid, owner, t, *records)
        yield from self._index(sid, text(uid), t)
        yield from self._event("history", sid, text(uid), t)
        return int(n)

    def update_context(
        self, sid: str, owner: str | None, expected_version: int, context: bytes, t: Stamp
    ) -> Op[bool]:
        """Compare-and-set the context; False when another writer changed it first."""
        reply = yield from self._run(
            scripts.UPDATE_CONTEXT, sid, owner, t, expected_version, context
        )
        if reply[0] == "conflict":
            return False
        yield from self._index(sid, text(reply[2]), t)
        yield from self._event("context", sid, text(reply[2]), t)
        return True

    def delete(
        self, sid: str, owner: str | None, t: Stamp, merged_into: tuple[str, str] | None = None,
        revision: str = "",
    ) -> Op[bool]:  # fmt: skip
        """Replace the session by a tombstone. ``merged_into`` (primary, its owner): the last
        step of a merge, only while the session is fenced for it (False when it is not).
        ``revision``: only if the session's revision is that one (False when it is not)."""
        primary, p_owner = merged_into or ("", "")
        reply = yield from self._run(
            scripts.DELETE, sid, owner, t, primary, self._tomb_ms, p_owner, revision
        )
        if reply[0] == "conflict":
            return False
        yield from self._unindex(sid, text(reply[1]), t)
        if primary:
            yield from self._event("merge", sid, text(reply[1]), t, "into", primary)
        else:
            yield from self._event("delete", sid, text(reply[1]), t)
        return True

    def fence(
        self, sid: str, owner: str | None, primary: str, p_owner: str, t: Stamp
    ) -> Op[str]:
        """Refuse writes to ``sid`` from now on (the first step of merging it into
        ``primary``, owned by ``p_owner``); returns its owner."""
        _, uid = yield from self._run(scripts.FENCE, sid, owner, t, primary, p_owner)
        return text(uid)

    def merge_into(
        self, sid: str, owner: str | None, version: int, context: bytes, created: int,
        merged_from: bytes, state: Sequence[bytes | str], records: Sequence[bytes],
        topics: Sequence[str], t: Stamp,
    ) -> Op[str]:  # fmt: skip
        """Fold a fenced session's records into ``sid`` (see scripts.MERGE_INTO): 'ok',
        'conflict' (its context changed since ``version``) or 'legacy'."""
        reply = yield from self._run(
            scripts.MERGE_INTO, sid, owner, t, version, context, created, merged_from,
            len(state), *state, len(records), *records, *topics,
        )  # fmt: skip
        if reply[0] == "ok" and self.cluster:
            h = yield from self.summaries([sid])  # the index step needs the times it kept
            row = h[0]
            if row is not None:
                later = Stamp(int(row["last_activity"]), int(row["expires_at"]), t.now)
                yield from self._index(sid, row["user_id"], later)
        return str(reply[0])

    def upgrade(
        self, sid: str, owner: str | None, triples: Sequence[tuple[int, bytes, bytes]], t: Stamp
    ) -> Op[int]:
        """Rewrite records in place, each only while it is unchanged (see scripts.UPGRADE)."""
        args = [a for triple in triples for a in triple]
        _, n = yield from self._run(scripts.UPGRADE, sid, owner, t, *args)
        return int(n)

    def write(
        self, sid: str, uid: str, fields: list[str | bytes], records: Sequence[bytes],
        t: Stamp, *, mode: str, kind: str, expect: tuple[int, int] | None = None,
        side: Side | None = None, side_rev: str = "",
    ) -> Op[bool]:  # fmt: skip
        """Replace a whole session (mode 'new', 'replace' or 'cas'), side data included (none
        when ``side`` is None); False on a CAS conflict. ``kind``: its event ('import',
        'restore' or 'rotate'). ``side_rev``: with 'cas', the side data's revision (the
        hash's ``side_rev``, '0' when absent) that must hold too ('' = not checked)."""
        version, total = expect if expect else ("", "")
        pairs = [a for kv in side.fields.items() for a in kv] if side else []
        members = side.members if side else []
        reply = yield from self._run(
            scripts.WRITE, sid, None, t, mode, kind, version, total, len(fields),
            len(pairs) // 2, len(members), side_rev, *fields, *pairs, *members, *records,
        )  # fmt: skip
        if reply[0] == "conflict":
            return False
        old = text(reply[1])
        if old and old != uid:
            yield from self._unindex(sid, old, t)
        yield from self._index(sid, uid, t, created=True)
        yield from self._event(kind, sid, uid, t)
        return True

    # -- the cross-slot index step on a cluster (single servers do it inside the script) --

    def _index(self, sid: str, uid: str, t: Stamp, created: bool = False) -> Op[None]:
        if self.cluster:
            row = indexes.Row(sid, uid, t.activity, t.expires, t.now, self._prefs_ms)
            yield from indexes.live(self.keys, row, created)

    def _unindex(self, sid: str, uid: str, t: Stamp) -> Op[None]:
        if self.cluster:
            yield from indexes.gone(self.keys, [indexes.Row(sid, uid, now=t.now)])

    def _event(self, kind: str, sid: str, uid: str, t: Stamp, *extra: Arg) -> Op[None]:
        """The event of a session script, on a cluster (one server: the script wrote it)."""
        if self.cluster:
            yield from self.event(kind, sid, uid, t, *extra)

    def event(self, kind: str, sid: str, uid: str, t: Stamp, *extra: Arg) -> Op[None]:
        """Write one event with the EVENT script: once per (operation id, kind)."""
        yield from self.events_of([(kind, sid, uid, t.op, extra)], t.now)

    def events_of(
        self, events: Sequence[tuple[str, str, str, str, Sequence[Arg]]], now: int
    ) -> Op[None]:
        """Write (kind, sid, uid, op id, extra fields) events in one step, each once per
        (op id, kind)."""
        if not self._events or not events:
            return
        args: list[Arg] = [self._events, self._op_window_ms, now]
        for kind, sid, uid, op, extra in events:
            fields = ("kind", kind, "sid", sid, "uid", uid, "op", op, "at", now, *extra)
            args += [f"{op}:{kind}" if op else "", len(fields), *fields]
        yield Eval(scripts.EVENT, (self.keys.events, self.keys.event_ops), tuple(args))

    def stream_end(self) -> Op[str | None]:
        """The id of the stream's newest event (None: no event)."""
        (rows,) = yield Batch((("XREVRANGE", self.keys.events, "+", "-", "COUNT", 1),))
        return text(rows[0][0]) if rows else None

    def has_event(self, event_id: str) -> Op[bool]:
        (rows,) = yield Batch((("XRANGE", self.keys.events, event_id, event_id),))
        return bool(rows)

    def events_after(
        self, after: str, upto: str, count: int
    ) -> Op[list[tuple[str, dict[str, str]]]]:
        """Up to ``count`` events with ids above ``after`` and up to ``upto``, oldest first:
        (id, fields)."""
        (rows,) = yield Batch((("XRANGE", self.keys.events, f"({after}", upto, "COUNT", count),))
        out = []
        for eid, fields in rows:
            if not isinstance(fields, dict):  # a flat [field, value, ...] list
                it = iter(fields)
                fields = dict(zip(it, it))
            out.append((text(eid), {text(k): text(v) for k, v in fields.items()}))
        return out

    # -- indexes and listings ----------------------------------------------------------

    def index_page(self, key: str, after: int | None, count: int) -> Op[list[tuple[str, int]]]:
        """About ``count`` (member, score) of an index by ascending score, all above ``after``.

        The page ends with the whole group of its last score, so that resuming above that
        score skips no member of it.
        """
        lo = "-inf" if after is None else f"({after}"
        page = ("ZRANGE", key, lo, "+inf", "BYSCORE", "LIMIT", 0, count, "WITHSCORES")
        while True:
            (flat,) = yield Batch((page,))
            pairs = raw_pairs(flat)
            rows = yield from scored(key, pairs)
            if rows or not pairs:
                break  # a page of junk members only: they are gone now, so read it again
        if len(pairs) == count:  # the last score's group may go on past the page
            last = int_score(pairs[-1][1])
            (ties,) = yield Batch((("ZRANGE", key, last, last, "BYSCORE", "WITHSCORES"),))
            rows = [r for r in rows if r[1] < last] + (yield from scored(key, ties))
        return rows

    def summaries(self, sids: Sequence[str]) -> Op[list[dict[str, str] | None]]:
        """The summary fields of each session, None for those gone from Redis."""
        if not sids:
            return []
        rows = yield Batch(tuple(("HMGET", self.keys.session(s), *SUMMARY_FIELDS) for s in sids))
        return _summary_rows(rows)

    def page_summaries(
        self, uid: str | None, offset: int, count: int
    ) -> Op[tuple[list[str | None], list[dict[str, str] | None]]]:
        """A page of session ids by activity, newest first, and the summary fields of each.

        Rows are None for sessions gone from Redis; ids are None where a member was junk
        (see _members). One round trip on a single server.
        """
        key = self.keys.sessions if uid is None else self.keys.user_sessions(uid)
        if self.cluster:  # the session hashes live in other slots than the index
            (raw,) = yield Batch((("ZREVRANGE", key, offset, offset + count - 1),))
            ids = yield from members(key, raw)
            found = iter((yield from self.summaries([i for i in ids if i is not None])))
            return ids, [None if i is None else next(found) for i in ids]
        family = self.keys.session_family
        head, tail = family.head, family.tail
        raw, rows = yield Eval(
            PAGE_SUMMARIES, (key,), (offset, offset + count - 1, head, tail, *SUMMARY_FIELDS), True
        )
        return (yield from members(key, raw)), _summary_rows(rows)

    def exists(self, sids: Sequence[str]) -> Op[list[bool]]:
        if not sids:
            return []
        rows = yield Batch(tuple(("EXISTS", self.keys.session(s)) for s in sids))
        return [bool(r) for r in rows]

    # -- preferences ---------------------------------------------------------------------

    def set_prefs(
        self, uid: str, values: dict[str, bytes], remove: Sequence[str], t: Stamp
    ) -> Op[None]:
        """Set and remove preferences in one step, once per operation id (scripts.PREFS)."""
        pairs = [a for kv in values.items() for a in kv]
        at = Stamp(t.now, t.now + self._prefs_ms * 1000, t.now, t.op)  # the prefs' own expiry
        yield self._eval(
            scripts.PREFS, "", None, at, len(pairs), *pairs, *remove, key=self.keys.user_prefs(uid)
        )
        yield from self._event("prefs", "", uid, t)

    def get_prefs(self, uid: str, touch: bool = False) -> Op[dict[str, str]]:
        """The user's preferences; ``touch`` counts the read as activity (their TTL slides)."""
        key = self.keys.user_prefs(uid)
        if not touch:
            (h,) = yield Batch((("HGETALL", key),))
        else:
            h, _ = yield Batch((("HGETALL", key), ("PEXPIRE", key, self._prefs_ms)))
        return hash_reply(h)

    def users_by_name(self, prefix: str, after: str | None, count: int) -> Op[list[str]]:
        """Up to ``count`` user ids starting with ``prefix``, in name order, after ``after``."""
        lo = f"({after}" if after is not None else f"[{prefix}"
        hi = f"[{prefix}\xff" if prefix else "+"  # no user id holds \xff: it ends the prefix
        key = self.keys.users_by_name
        (raw,) = yield Batch((("ZRANGE", key, lo, hi, "BYLEX", "LIMIT", 0, count),))
        return [m for m in (yield from members(key, raw)) if m is not None]

    # -- stats ---------------------------------------------------------------------------

    def counts(self) -> Op[tuple[int, int, list[tuple[str, int]], list[tuple[str, int]], int]]:
        """(sessions, users, oldest, newest, used memory)."""
        k = self.keys
        n_s, n_u, oldest, newest = yield Batch((
            ("ZCARD", k.sessions),
            ("ZCARD", k.users),
            ("ZRANGE", k.sessions, 0, 0, "WITHSCORES"),
            ("ZREVRANGE", k.sessions, 0, 0, "WITHSCORES"),
        ))  # fmt: skip
        oldest = yield from scored(k.sessions, oldest)
        newest = yield from scored(k.sessions, newest)
        infos = yield OnEachPrimary(("INFO", "memory"))  # a cluster's data set is on them all
        return int(n_s), int(n_u), oldest, newest, sum(_used_memory(i) for i in infos)

    def totals(self, sids: Sequence[str]) -> Op[int]:
        if not sids:
            return 0
        field = "total_interactions"
        rows = yield Batch(tuple(("HGET", self.keys.session(s), field) for s in sids))
        return sum(int(r) for r in rows if r is not None)


def tombstone_error(sid: str, tomb: str) -> SessionNotFound:
    """The error a tombstone's value stands for: 'deleted <owner>', 'merged <the primary's
    owner> <primary>', or the owner-less forms written before tombstones named an owner."""
    kind, _, rest = tomb.partition(" ")
    if kind == "merged":
        return SessionMerged(sid, rest.rpartition(" ")[2])
    if tomb.startswith("merged:"):
        return SessionMerged(sid, tomb.removeprefix("merged:"))
    return SessionNotFound(sid, f"session {sid!r} was deleted")


def _summary_rows(rows: Reply) -> list[dict[str, str] | None]:
    return [
        None if not row or row[0] is None else {f: text(v) for f, v in zip(SUMMARY_FIELDS, row)}
        for row in rows
    ]


# Kept here, not in scripts.py: single servers only (it reads keys of many slots).
# KEYS[1] an activity index (ZSET); ARGV[1] ARGV[2] ZREVRANGE start and stop, ARGV[3] ARGV[4]
# the session hash key's head and tail around the id, ARGV[5..] the fields to read.
# Reply: {ids, rows}: each row the HMGET of that session's fields (all nil once it is gone).
PAGE_SUMMARIES = Script(
    "page_summaries",
    """
local ids = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])
local rows = {}
for i, sid in ipairs(ids) do
  rows[i] = redis.call('HMGET', ARGV[3] .. sid .. ARGV[4], unpack(ARGV, 5))
end
return {ids, rows}
""",
)


def _used_memory(info: Reply) -> int:
    if isinstance(info, dict):
        return int(info.get("used_memory", 0))
    for line in text(info).splitlines():
        if line.startswith("used_memory:"):
            return int(line.partition(":")[2])
    return 0
