"""A session's checkpoints, kept in its side keys (keys.py): the layout and its scripts.

A checkpoint (a framework's snapshot of a run: LangGraph's) lives in a namespace of the
session and has an id that orders it in time (LangGraph's are uuid6 strings). Its payload,
the blobs it refers to and the pending writes recorded against it are fields of the side
hash; the side index (a ZSET, every score 0) orders them for ZRANGE BYLEX:

| side hash field       | index member          | holds                                   |
|-----------------------|-----------------------|-----------------------------------------|
| ``c|NS|ID``           | ``c|NS|ID``           | the checkpoint (its namespace's order)   |
|                       | ``t|ID|NS``           | -- (the session's order, every namespace)|
| ``w|NS|ID|KEY``       | ``w|NS|ID|KEY``       | a pending write of checkpoint ID        |
| ``b|NS|NAME|VERSION`` |                       | a blob (read by name, never listed)     |

``|`` stands for a NUL byte, which no namespace, id, key, name or version may hold (core checks), so
each part ends where the next begins and a prefix range never runs into a longer name.
Reads are O(log n + k) in what they return: the newest checkpoint of a namespace, the
``limit`` before an id, the writes of a checkpoint, whatever the number of checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from redsession.storage.commands import Batch, Op, Reply, text
from redsession.storage.scripts import session_script, write_script
from redsession.storage.store import Stamp, Store

SEP = "\0"
_END = "\1"  # sorts right after SEP: the exclusive end of a prefix range

# A write to the side data, creating the session when it is missing and ARGV[7] names a user
# (with ARGV[8] its scope, JSON or ''). ARGV[9] n, ARGV[10] x, ARGV[11] m, ARGV[12] y: then
# n field/value pairs to set, x index members to add, m pairs to set only where the field
# is absent, y fields to remove, and the rest: index members to remove. Reply:
# {'ok', owner, 1 if it created the session else 0}.
SIDE_WRITE = write_script(
    "side_write",
    """
local n, x, m, y = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local uid, created = owner_or_create(ARGV[7], 8)
if not uid then return created end
set_side(13, n, 12 + 2 * n + x)
local a = 13 + 2 * n + x
for i = a, a + 2 * m - 1, 2 do redis.call('HSETNX', SIDE, ARGV[i], ARGV[i + 1]) end
a = a + 2 * m
for i = a, a + y - 1, 1000 do
  redis.call('HDEL', SIDE, unpack(ARGV, i, math.min(i + 999, a + y - 1)))
end
a = a + y
for i = a, #ARGV, 1000 do redis.call('ZREM', SIDEIX, unpack(ARGV, i, math.min(i + 999, #ARGV))) end
redis.call('HINCRBY', HASH, 'side_rev', 1)  -- a whole-session rewrite's CAS sees it
touch(uid)
index(uid, created)
if created then event('create', uid) end
event('side', uid)
return {'ok', uid, created and 1 or 0}
""",
)

# Removes all the side data, keeping the session. Reply: {'ok', owner}.
SIDE_CLEAR = write_script(
    "side_clear",
    """
local uid, err = owner(true)
if not uid then return err end
redis.call('DEL', SIDE, SIDEIX)
redis.call('HINCRBY', HASH, 'side_rev', 1)
touch(uid)
index(uid)
event('side', uid)
return {'ok', uid}
""",
)

# Checkpoints newest first: ARGV[7] ARGV[8] a ZRANGE BYLEX range (min, max) over ``c`` or
# ``t`` members, ARGV[9] at most this many. Reply: {'ok', rows}, each row {the checkpoint's
# ``c`` member, its payload, its writes' fields, their values}, and then the last index
# member read ('' when the range ran out), to resume from.
CHECKPOINTS = session_script(
    "checkpoints",
    """
local uid, err = owner(false)
if not uid then return err end
local members = redis.call('ZRANGE', SIDEIX, ARGV[8], ARGV[7], 'BYLEX', 'REV', 'LIMIT', 0, ARGV[9])
local rows = {}
for _, c in ipairs(members) do
  if string.sub(c, 1, 1) == 't' then  -- t|ID|NS -> c|NS|ID
    local j = string.find(c, '\\0', 3, true)
    c = 'c\\0' .. string.sub(c, j + 1) .. '\\0' .. string.sub(c, 3, j - 1)
  end
  local payload = redis.call('HGET', SIDE, c)
  if payload then
    local w = 'w' .. string.sub(c, 2)
    local keys = redis.call('ZRANGE', SIDEIX, '[' .. w .. '\\0', '(' .. w .. '\\1', 'BYLEX')
    local values = {}
    if #keys > 0 then values = redis.call('HMGET', SIDE, unpack(keys)) end
    rows[#rows + 1] = {c, payload, keys, values}
  end
end
local last = ''
if #members == tonumber(ARGV[9]) then last = members[#members] end
return {'ok', rows, last}
""",
)


class Row(NamedTuple):
    """A checkpoint as stored: its namespace, id, payload and pending writes (key, value)."""

    ns: str
    checkpoint_id: str
    payload: bytes
    writes: list[tuple[str, bytes]]


class Page(NamedTuple):
    rows: list[Row]
    resume: bytes | None  # the bound to read the next page from, None at the end


def checkpoint_field(ns: str, cid: str) -> str:
    return f"c{SEP}{ns}{SEP}{cid}"


def thread_member(ns: str, cid: str) -> str:
    return f"t{SEP}{cid}{SEP}{ns}"


def write_field(ns: str, cid: str, key: str) -> str:
    return f"w{SEP}{ns}{SEP}{cid}{SEP}{key}"


def blob_field(ns: str, name: str, version: str) -> str:
    return f"b{SEP}{ns}{SEP}{name}{SEP}{version}"


def parse(field: str) -> list[str]:
    """A field or member's parts: its kind letter, then the names it was built from."""
    return field.split(SEP)


class Checkpoints:
    """The checkpoint operations of a Store, as generators of commands."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def put(
        self, sid: str, t: Stamp, create_for: str, scope: bytes, ns: str, cid: str,
        payload: bytes, blobs: Sequence[tuple[str, str, bytes]],
    ) -> Op[None]:  # fmt: skip
        """Store a checkpoint and the (name, version, value) blobs it brings, creating the
        session if missing."""
        fields = [(checkpoint_field(ns, cid), payload)]
        fields += [(blob_field(ns, name, version), value) for name, version, value in blobs]
        index = [checkpoint_field(ns, cid), thread_member(ns, cid)]
        yield from self.write(sid, t, create_for, scope, set_=fields, add=index)

    def put_writes(
        self, sid: str, t: Stamp, create_for: str, scope: bytes, ns: str, cid: str,
        writes: Sequence[tuple[str, bytes, bool]],
    ) -> Op[None]:  # fmt: skip
        """Record (key, value, replace) writes against a checkpoint: a write whose key is
        already there is kept as it was unless ``replace``."""
        keyed = [(write_field(ns, cid, key), value, replace) for key, value, replace in writes]
        yield from self.write(
            sid, t, create_for, scope,
            set_=[(f, v) for f, v, replace in keyed if replace],
            set_absent=[(f, v) for f, v, replace in keyed if not replace],
            add=[f for f, _, _ in keyed],
        )  # fmt: skip

    def write(
        self, sid: str, t: Stamp, create_for: str, scope: bytes, *,
        set_: Sequence[tuple[str, bytes]] = (), set_absent: Sequence[tuple[str, bytes]] = (),
        add: Sequence[str | bytes] = (), remove: Sequence[str | bytes] = (),
        unindex: Sequence[str | bytes] = (),
    ) -> Op[None]:  # fmt: skip
        """One SIDE_WRITE: set fields (or only absent ones), add index members, remove
        fields and index members, in one atomic step."""
        pairs = [a for kv in set_ for a in kv]
        absent = [a for kv in set_absent for a in kv]
        reply = yield from self.store._run(
            SIDE_WRITE, sid, None, t, create_for, scope, len(set_), len(add), len(set_absent),
            len(remove), *pairs, *add, *absent, *remove, *unindex,
        )  # fmt: skip
        uid, created = text(reply[1]), bool(int(reply[2]))
        yield from self.store._index(sid, uid, t, created=created)
        if created:
            yield from self.store._event("create", sid, uid, t)
        yield from self.store._event("side", sid, uid, t)

    def clear(self, sid: str, t: Stamp) -> Op[None]:
        """Remove every checkpoint, blob and write of the session (the session stays)."""
        _, uid = yield from self.store._run(SIDE_CLEAR, sid, None, t)
        yield from self.store._index(sid, text(uid), t)
        yield from self.store._event("side", sid, text(uid), t)

    def get(self, sid: str, t: Stamp, ns: str, cid: str | None) -> Op[Row | None]:
        """Checkpoint ``cid`` of namespace ``ns``, or its newest when ``cid`` is None."""
        if cid is None:
            lo, hi = f"[c{SEP}{ns}{SEP}", f"(c{SEP}{ns}{_END}"
        else:
            lo = hi = "[" + checkpoint_field(ns, cid)
        page = yield from self._page(sid, t, lo, hi, 1)
        return page.rows[0] if page.rows else None

    def page(
        self, sid: str, t: Stamp, ns: str | None, before: str | None, resume: bytes | None,
        count: int,
    ) -> Op[Page]:  # fmt: skip
        """Up to ``count`` checkpoints, newest first: of namespace ``ns`` (None: of every
        namespace, by id), with ids before ``before``; ``resume`` is a previous page's."""
        if ns is None:
            lo = f"[t{SEP}"
            hi = f"(t{SEP}{before}" if before is not None else f"(t{_END}"
        else:
            lo = f"[c{SEP}{ns}{SEP}"
            hi = "(" + checkpoint_field(ns, before) if before is not None else f"(c{SEP}{ns}{_END}"
        bound: str | bytes = hi if resume is None else b"(" + resume
        return (yield from self._page(sid, t, lo, bound, count))

    def _page(self, sid: str, t: Stamp, lo: str, hi: str | bytes, count: int) -> Op[Page]:
        _, rows, last = yield from self.store._run(
            CHECKPOINTS, sid, None, t, lo, hi, count, readonly=True
        )
        out = []
        for c, payload, keys, values in rows:
            _, ns, cid = parse(text(c))
            writes = [(text(k).split(SEP, 3)[3], v) for k, v in zip(keys, values) if v is not None]
            out.append(Row(ns, cid, payload, writes))
        return Page(out, bytes(last) if last else None)

    def blobs(self, sid: str, ns: str, names: Sequence[tuple[str, str]]) -> Op[list[Reply]]:
        """The values of the (name, version) blobs (None where there is none), in one read."""
        if not names:
            return []
        side = self.store.keys.side(sid)[0]
        fields = (blob_field(ns, n, v) for n, v in names)
        (values,) = yield Batch((("HMGET", side, *fields),))
        return list(values)
