"""All Redis access: each operation is a generator that yields commands and parses replies.

The generators do no I/O themselves ("sans-IO"): drivers.SyncDriver and AsyncDriver execute
what they yield, so the sync and async managers share every line of logic. This module and
drivers.py are the only ones that speak Redis commands (the worker's lock and the server
launcher aside).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redsession import scripts
from redsession.codec import Reply, flat_to_dict, text
from redsession.config import Settings
from redsession.errors import (
    PermissionDenied,
    SessionExists,
    SessionMerged,
    SessionNotFound,
)
from redsession.keys import Keys, expiry_member, split_expiry_member

log = logging.getLogger(__name__)

T = TypeVar("T")
Arg = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Eval:
    """Run one script (EVALSHA, loading it on NOSCRIPT)."""

    script: scripts.Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """Plain commands, pipelined without MULTI; the reply is the list of their replies."""

    commands: tuple[tuple[Arg, ...], ...]


@dataclass(frozen=True, slots=True)
class Scan:
    """One page of SCAN (on a cluster: over every primary); reply (next cursor or None, keys).

    The cursor is opaque to the caller: an int on one server, {node name: int} on a cluster.
    """

    match: str
    type: str
    count: int
    cursor: Any = None


Cmd = Eval | Batch | Scan
Op = Generator[Cmd, Any, T]

SUMMARY_FIELDS = ("user_id", "created_at", "last_activity", "total_interactions", "expires_at")


@dataclass(frozen=True, slots=True)
class Stamp:
    """The times a write carries: activity score, new expiry, and now (all µs)."""

    activity: int
    expires: int
    now: int


class Store:
    """The Redis operations of redsession, as generators of commands."""

    def __init__(self, keys: Keys, settings: Settings, *, cluster: bool = False) -> None:
        self.keys = keys
        self.cluster = cluster
        self._prefs_ms = int(settings.preferences_ttl.total_seconds() * 1000)
        self._tomb_ms = int(settings.session_ttl.total_seconds() * 1000)
        self._index_keys = () if cluster else keys.index_keys()
        self._user_parts = ("", "", "") if cluster else keys.user_key_parts()

    # -- session scripts ---------------------------------------------------------------

    def _eval(
        self, script: scripts.Script, sid: str, owner: str | None, t: Stamp, *extra: Arg
    ) -> Eval:
        return Eval(
            script,
            self.keys.session_keys(sid) + self._index_keys,
            (
                *self._user_parts,
                t.activity, t.expires, t.expires // 1000, t.now, self._prefs_ms,
                owner or "", sid, *extra,
            ),
        )  # fmt: skip

    def _run(
        self, script: scripts.Script, sid: str, owner: str | None, t: Stamp, *extra: Arg
    ) -> Op[list[Reply]]:
        reply: list[Reply] = yield self._eval(script, sid, owner, t, *extra)
        status = text(reply[0])
        if status in ("ok", "conflict", "limit"):
            return [status, *reply[1:]]
        if status == "exists":
            raise SessionExists(f"session {sid!r} already exists (or was deleted or merged)")
        if status == "denied":
            raise PermissionDenied(sid)
        if status == "gone":
            tomb = text(reply[1])
            if tomb.startswith("merged:"):
                raise SessionMerged(sid, tomb.removeprefix("merged:"))
            raise SessionNotFound(sid, f"session {sid!r} was deleted")
        raise SessionNotFound(sid)

    def create(self, sid: str, uid: str, context: bytes, created: int, t: Stamp) -> Op[None]:
        yield from self._run(scripts.CREATE, sid, None, t, uid, context, created)
        yield from self._index(sid, uid, t)

    def fetch(
        self, sid: str, owner: str | None, t: Stamp, *, touch: bool, history: int
    ) -> Op[tuple[dict[str, str], list[Reply]]]:
        _, flat, hist = yield from self._run(
            scripts.FETCH, sid, owner, t, "1" if touch else "0", history
        )
        h = flat_to_dict(flat)
        if touch:
            yield from self._index(sid, h["user_id"], t)
        return h, hist

    def history(
        self, sid: str, owner: str | None, t: Stamp, limit: int | None, before: int | None
    ) -> Op[list[Reply]]:
        _, _, items = yield from self._run(
            scripts.HISTORY, sid, owner, t,
            "" if limit is None else limit, "" if before is None else before,
        )  # fmt: skip
        return list(items)

    def log(
        self, sid: str, owner: str | None, record: bytes, topics: Sequence[str],
        max_topics: int, t: Stamp,
    ) -> Op[tuple[str, int]]:  # fmt: skip
        """Append one record; returns (status, log length). Status 'limit': too many topics."""
        reply = yield from self._run(scripts.LOG, sid, owner, t, record, max_topics, *topics)
        if reply[0] == "limit":
            return "limit", int(reply[1])
        yield from self._index(sid, text(reply[1]), t)
        return "ok", int(reply[2])

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
        return True

    def delete(
        self, sid: str, owner: str | None, tomb: str, t: Stamp,
        expect: tuple[int, int] | None = None,
    ) -> Op[bool]:  # fmt: skip
        """Replace the session by a tombstone; False if ``expect`` (version, total) is stale."""
        version, total = expect if expect else ("", "")
        reply = yield from self._run(
            scripts.DELETE, sid, owner, t, tomb, self._tomb_ms, version, total
        )
        if reply[0] == "conflict":
            return False
        yield from self._unindex(sid, text(reply[1]), t)
        return True

    def write(
        self, sid: str, uid: str, fields: list[str | bytes], records: Sequence[bytes],
        t: Stamp, *, mode: str, expect: tuple[int, int] | None = None,
    ) -> Op[bool]:  # fmt: skip
        """Replace a whole session (mode 'new', 'replace' or 'cas'); False on a CAS conflict."""
        version, total = expect if expect else ("", "")
        reply = yield from self._run(
            scripts.WRITE, sid, None, t, mode, version, total, len(fields), *fields, *records
        )
        if reply[0] == "conflict":
            return False
        old = text(reply[1])
        if old and old != uid:
            yield from self._unindex(sid, old, t)
        yield from self._index(sid, uid, t)
        return True

    # -- the cross-slot index step on a cluster (single servers do it inside the script) --

    def _index(self, sid: str, uid: str, t: Stamp) -> Op[None]:
        if not self.cluster:
            return
        k = self.keys
        yield Batch((
            ("ZADD", k.user_sessions(uid), t.activity, sid),
            ("PEXPIRE", k.user_prefs(uid), self._prefs_ms),
            ("ZADD", k.sessions, t.activity, sid),
            ("ZADD", k.users, "GT", t.activity, uid),
            ("ZADD", k.expiry, t.expires, expiry_member(sid, uid)),
            ("ZADD", k.dirty, t.now, sid),
        ))  # fmt: skip

    def _unindex(self, sid: str, uid: str, t: Stamp) -> Op[None]:
        if not self.cluster:
            return
        k = self.keys
        yield Batch((
            ("ZREM", k.user_sessions(uid), sid),
            ("ZREM", k.sessions, sid),
            ("ZREM", k.expiry, expiry_member(sid, uid)),
            ("ZADD", k.dirty, t.now, sid),
        ))  # fmt: skip

    # -- indexes and listings ----------------------------------------------------------

    def index_page(self, key: str, after: int | None, count: int) -> Op[list[tuple[str, int]]]:
        """About ``count`` (member, score) of an index by ascending score, all above ``after``.

        The page ends with the whole group of its last score, so that resuming above that
        score skips no member of it.
        """
        lo = "-inf" if after is None else f"({after}"
        (flat,) = yield Batch(
            (("ZRANGE", key, lo, "+inf", "BYSCORE", "LIMIT", 0, count, "WITHSCORES"),)
        )
        pairs = _raw_pairs(flat)
        rows = yield from self._scored(key, pairs)
        if len(pairs) == count:  # the last score's group may go on past the page
            last = _score(pairs[-1][1])
            (ties,) = yield Batch((("ZRANGE", key, last, last, "BYSCORE", "WITHSCORES"),))
            rows = [r for r in rows if r[1] < last] + (yield from self._scored(key, ties))
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
            ids = yield from self._members(key, raw)
            found = iter((yield from self.summaries([i for i in ids if i is not None])))
            return ids, [None if i is None else next(found) for i in ids]
        head, _, tail = self.keys.session("\x00").partition("\x00")
        raw, rows = yield Eval(
            PAGE_SUMMARIES, (key,), (offset, offset + count - 1, head, tail, *SUMMARY_FIELDS)
        )
        return (yield from self._members(key, raw)), _summary_rows(rows)

    def exists(self, sids: Sequence[str]) -> Op[list[bool]]:
        if not sids:
            return []
        rows = yield Batch(tuple(("EXISTS", self.keys.session(s)) for s in sids))
        return [bool(r) for r in rows]

    def expired(self, cutoff: int, count: int) -> Op[list[tuple[str, str, int]]]:
        """Up to ``count`` (sid, uid, expires_at) whose index entry says they have expired."""
        (flat,) = yield Batch(
            (("ZRANGEBYSCORE", self.keys.expiry, "-inf", cutoff, "WITHSCORES", "LIMIT", 0, count),)
        )
        out = []
        for member, score in (yield from self._scored(self.keys.expiry, flat)):
            sid, uid = split_expiry_member(member)
            out.append((sid, uid, score))
        return out

    def count_expiring(self, start: int, stop: int) -> Op[int]:
        (n,) = yield Batch((("ZCOUNT", self.keys.expiry, start, stop),))
        return int(n)

    def forget(self, entries: Sequence[tuple[str, str, int]], now: int) -> Op[list[str]]:
        """Drop index entries of expired sessions; marks them dirty so the dump drops files.

        Only entries whose expiry score is unchanged go: a session revived meanwhile stays.
        """
        if not entries:
            return []
        args: list[Arg] = []
        for sid, uid, score in entries:
            args += [expiry_member(sid, uid), score]
        removed = yield Eval(scripts.REMOVE_IF_SCORE, (self.keys.expiry,), tuple(args))
        gone = {text(m) for m in removed}
        cmds: list[tuple[Arg, ...]] = []
        users = set()
        sids = []
        for sid, uid, _ in entries:
            if expiry_member(sid, uid) in gone:
                sids.append(sid)
                users.add(uid)
                cmds += [
                    ("ZREM", self.keys.user_sessions(uid), sid),
                    ("ZREM", self.keys.sessions, sid),
                    ("ZADD", self.keys.dirty, now, sid),
                ]
        if cmds:
            yield Batch(tuple(cmds))
            # A user with no sessions left leaves the users index.
            ulist = sorted(users)
            sizes = yield Batch(tuple(("ZCARD", self.keys.user_sessions(u)) for u in ulist))
            empty = [u for u, n in zip(ulist, sizes) if int(n) == 0]
            if empty:
                yield Batch((("ZREM", self.keys.users, *empty),))
        return sids

    def dirty(self, count: int) -> Op[list[tuple[str, int]]]:
        """Up to ``count`` (sid, stamp) changed since their last dump, oldest change first."""
        (flat,) = yield Batch((("ZRANGE", self.keys.dirty, 0, count - 1, "WITHSCORES"),))
        return (yield from self._scored(self.keys.dirty, flat))

    def clear_dirty(self, entries: Sequence[tuple[str, int]]) -> Op[int]:
        """Unmark dumped sessions, unless they changed again after ``stamp``."""
        if not entries:
            return 0
        args: list[Arg] = [a for sid, stamp in entries for a in (sid, stamp)]
        removed = yield Eval(scripts.REMOVE_IF_SCORE, (self.keys.dirty,), tuple(args))
        return len(removed)

    # -- repair: SCAN, for redsession.repair only (never on a runtime path) ---------------

    def scan_sessions(self, cursor: Any, count: int) -> Op[tuple[Any, list[str]]]:
        """One SCAN page of the session hashes: (next cursor or None at the end, their ids)."""
        head, tail = self.keys.session("*").split("*")
        return (yield from self._scan(head, tail, "hash", cursor, count))

    def scan_user_indexes(self, cursor: Any, count: int) -> Op[tuple[Any, list[str]]]:
        """One SCAN page of the per-user session indexes: (next cursor, user ids)."""
        head, tail = self.keys.user_sessions("*").split("*")
        return (yield from self._scan(head, tail, "zset", cursor, count))

    def _scan(
        self, head: str, tail: str, type_: str, cursor: Any, count: int
    ) -> Op[tuple[Any, list[str]]]:
        nxt, raw = yield Scan(f"{head}*{tail}", type_, count, cursor)
        names = [text(k) for k in raw]
        return nxt, [n[len(head) : len(n) - len(tail)] for n in names]

    def zscan(self, key: str, cursor: int, count: int) -> Op[tuple[int, list[tuple[str, int]]]]:
        """One ZSCAN page of an index: (next cursor, 0 at the end; (member, score) pairs)."""
        ((nxt, pairs),) = yield Batch((("ZSCAN", key, cursor, "COUNT", count),))
        return int(nxt), (yield from self._scored(key, pairs))

    def reindex(self, rows: Sequence[tuple[str, str, int, int]]) -> Op[int]:
        """Put (sid, uid, last activity, expires_at) into every index; returns entries added.

        GT: an entry never moves back in time, so a write racing the repair keeps its score.
        """
        k = self.keys
        cmds: list[tuple[Arg, ...]] = []
        for sid, uid, activity, expires in rows:
            cmds += [
                ("ZADD", k.user_sessions(uid), "GT", activity, sid),
                ("ZADD", k.sessions, "GT", activity, sid),
                ("ZADD", k.users, "GT", activity, uid),
                ("ZADD", k.expiry, "GT", expires, expiry_member(sid, uid)),
            ]
        if not cmds:
            return 0
        added = yield Batch(tuple(cmds))
        return sum(int(n) for n in added)

    def remove_if_score(self, key: str, entries: Sequence[tuple[str, int]]) -> Op[list[str]]:
        """Remove members whose score is still the one read: a concurrent write keeps its entry."""
        if not entries:
            return []
        args = tuple(a for member, score in entries for a in (member, score))
        removed = yield Eval(scripts.REMOVE_IF_SCORE, (key,), args)
        return [text(m) for m in removed]

    def mark_dirty(self, sids: Sequence[str], now: int) -> Op[None]:
        """So the next dump writes (or, for a gone session, removes) their files."""
        if sids:
            yield Batch((("ZADD", self.keys.dirty, *(a for s in sids for a in (now, s))),))

    def user_index_sizes(self, uids: Sequence[str]) -> Op[list[int]]:
        if not uids:
            return []
        sizes = yield Batch(tuple(("ZCARD", self.keys.user_sessions(u)) for u in uids))
        return [int(n) for n in sizes]

    # -- preferences ---------------------------------------------------------------------

    def set_prefs(self, uid: str, values: dict[str, bytes], remove: Sequence[str]) -> Op[None]:
        key = self.keys.user_prefs(uid)
        cmds: list[tuple[Arg, ...]] = []
        if values:
            cmds.append(("HSET", key, *(a for kv in values.items() for a in kv)))
        if remove:
            cmds.append(("HDEL", key, *remove))
        cmds.append(("PEXPIRE", key, self._prefs_ms))
        yield Batch(tuple(cmds))

    def get_prefs(self, uid: str) -> Op[dict[str, str]]:
        (h,) = yield Batch((("HGETALL", self.keys.user_prefs(uid)),))
        return _hash(h)

    # -- stats ---------------------------------------------------------------------------

    def counts(self) -> Op[tuple[int, int, list[tuple[str, int]], list[tuple[str, int]], int]]:
        """(sessions, users, oldest, newest, used memory)."""
        k = self.keys
        n_s, n_u, oldest, newest, info = yield Batch((
            ("ZCARD", k.sessions),
            ("ZCARD", k.users),
            ("ZRANGE", k.sessions, 0, 0, "WITHSCORES"),
            ("ZREVRANGE", k.sessions, 0, 0, "WITHSCORES"),
            ("INFO", "memory"),
        ))  # fmt: skip
        oldest = yield from self._scored(k.sessions, oldest)
        newest = yield from self._scored(k.sessions, newest)
        return int(n_s), int(n_u), oldest, newest, _used_memory(info)

    def totals(self, sids: Sequence[str]) -> Op[int]:
        if not sids:
            return 0
        field = "total_interactions"
        rows = yield Batch(tuple(("HGET", self.keys.session(s), field) for s in sids))
        return sum(int(r) for r in rows if r is not None)

    # -- decoding index members ----------------------------------------------------------

    def _members(self, key: str, raw: Sequence[Reply]) -> Op[list[str | None]]:
        """Members of the index ``key`` as text, None for one that is not UTF-8.

        redsession never writes such a member (someone wrote to its keys directly); left in
        place it would stop every reader of the index (listings, dumps, cleanup, repair), so
        it is removed here, where it is met.
        """
        out = [_text_or_none(m) for m in raw]
        junk = [m for m, t in zip(raw, out) if t is None]
        if junk:
            log.warning("removing %d member(s) that are not UTF-8 from %s", len(junk), key)
            yield Batch((("ZREM", key, *junk),))
        return out

    def _scored(self, key: str, reply: Reply) -> Op[list[tuple[str, int]]]:
        """A WITHSCORES reply of ``key`` as (member, integer score), as _members decodes."""
        pairs = _raw_pairs(reply)
        names = yield from self._members(key, [m for m, _ in pairs])
        return [(n, _score(s)) for n, (_, s) in zip(names, pairs) if n is not None]


def _summary_rows(rows: Reply) -> list[dict[str, str] | None]:
    return [
        None if not row or row[0] is None else {f: text(v) for f, v in zip(SUMMARY_FIELDS, row)}
        for row in rows
    ]


# Kept here, not in scripts.py: single servers only (it reads keys of many slots).
# KEYS[1] an activity index (ZSET); ARGV[1] ARGV[2] ZREVRANGE start and stop, ARGV[3] ARGV[4]
# the session hash key's head and tail around the id, ARGV[5..] the fields to read.
# Reply: {ids, rows}: each row the HMGET of that session's fields (all nil once it is gone).
PAGE_SUMMARIES = scripts.Script(
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


def _raw_pairs(reply: Reply) -> list[tuple[Reply, Reply]]:
    """A WITHSCORES reply (RESP2 flat list, RESP3 or ZSCAN pairs) as (member, score) pairs."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, s) for m, s in reply]
    it = iter(reply)
    return list(zip(it, it))


def _score(raw: Reply) -> int:
    return int(float(raw))


def _text_or_none(raw: Reply) -> str | None:
    try:
        return text(raw)
    except UnicodeDecodeError:
        return None


def _hash(reply: Reply) -> dict[str, str]:
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    return flat_to_dict(reply)


def _used_memory(info: Reply) -> int:
    if isinstance(info, dict):
        return int(info.get("used_memory", 0))
    for line in text(info).splitlines():
        if line.startswith("used_memory:"):
            return int(line.partition(":")[2])
    return 0
