"""The indexes (sorted sets) that find sessions, and the one definition of how writes keep them.

A live session appears in the indexes of ENTRIES; a write also marks it dirty and keeps its
owner's preferences alive (LIVE), and a delete takes the entries out again (GONE). Those two
tables are the only statement of the rule. They are rendered twice: as Lua functions that
every session script calls on a single server, where the script may touch the index keys in
the same atomic step, and as pipelined commands, the cluster's second step (there the index
keys sit in other slots than the session's). Repair rebuilds ENTRIES from the session hashes.
tests/test_indexes.py holds the two renderings to the same effect.

One step cannot be a plain command: a user leaves the users index when their last session
goes. Lua checks and removes in the same step; the pipelined form reads the user's index size
and then removes the user only while its score is the one read, so a session indexed in
between keeps its user.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redsession.storage.commands import (
    Arg,
    Batch,
    Eval,
    Op,
    Reply,
    Script,
    int_score,
    raw_pairs,
    text,
)
from redsession.storage.keys import (
    GLOBAL_SUFFIXES,
    USER_HEAD,
    USER_PREFS_TAIL,
    USER_SESSIONS_TAIL,
    Keys,
    expiry_member,
)

log = logging.getLogger(__name__)

# The global indexes (their names: keys.GLOBAL_SUFFIXES).
GLOBAL = tuple(GLOBAL_SUFFIXES)

# KEYS[1] a ZSET; ARGV pairs of member, score.
# Removes each member only while its score is still the one given: a change that raced
# with the caller (a newer dirty stamp, a pushed-back expiry, a user's new session) keeps
# its entry. Reply: the members removed.
REMOVE_IF_SCORE = Script(
    "remove_if_score",
    """
local removed = {}
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    removed[#removed + 1] = ARGV[i]
  end
end
return removed
""",
)


@dataclass(frozen=True)
class Write:
    """``command index operand...``: operands name values (see _LUA and _values)."""

    command: str  # ZADD, ZREM or PEXPIRE
    index: str  # a GLOBAL index, or the per-user "user_sessions" / "user_prefs"
    operands: tuple[str, ...]


# Where a live session appears. GT on users: a user's score is their newest activity over
# all their sessions, so an older session's write must not lower it.
ENTRIES = (
    Write("ZADD", "user_sessions", ("activity", "sid")),
    Write("ZADD", "sessions", ("activity", "sid")),
    Write("ZADD", "users", ("GT", "activity", "uid")),
    Write("ZADD", "expiry", ("expires", "sid:uid")),
    Write("ZADD", "users_by_name", ("zero", "uid")),
)
# What a write that creates a session adds to LIVE: the owner in name order, which no later
# write can change (so appends do not pay for it).
CREATED = (Write("ZADD", "users_by_name", ("zero", "uid")),)
# Every write to a live session: its entries (but the name order, set at creation), its
# dirty mark (for the dump), and its owner's preferences kept alive for preferences_ttl after
# their last activity.
LIVE = (
    *(w for w in ENTRIES if w not in CREATED),
    Write("ZADD", "dirty", ("now", "sid")),
    Write("PEXPIRE", "user_prefs", ("prefs_ttl",)),
)
# What repair puts back: the entries, never lowering a score (GT), so that a write racing
# with the repair keeps its newer one.
REPAIR = tuple(
    w if "GT" in w.operands else Write(w.command, w.index, ("GT", *w.operands)) for w in ENTRIES
)
# A session deleted, merged away or expired: out of every index (users: see above), and
# marked dirty so that the dump removes its file.
GONE = (
    Write("ZREM", "user_sessions", ("sid",)),
    Write("ZREM", "sessions", ("sid",)),
    Write("ZREM", "expiry", ("sid:uid",)),
    Write("ZADD", "dirty", ("now", "sid")),
)
# Cleanup takes an expired session's expiry entry out first, only while its score is unchanged,
# then the rest. Removing it again could drop the entry of a session revived in between.
EXPIRED = tuple(w for w in GONE if w.index != "expiry")

# -- the Lua rendering (the session scripts' prelude defines these names) -----------------

# The prelude's P is the key prefix (given on a single server only).
_LUA = {
    "user_sessions": f"P .. '{USER_HEAD}' .. uid .. '{USER_SESSIONS_TAIL}'",
    "user_prefs": f"P .. '{USER_HEAD}' .. uid .. '{USER_PREFS_TAIL}'",
    **{name: f"P .. '{suffix}'" for name, suffix in GLOBAL_SUFFIXES.items()},
    "activity": "ACTIVE",
    "expires": "EXP_US",
    "now": "NOW",
    "prefs_ttl": "PREFS_MS",
    "sid": "SID",
    "uid": "uid",
    "sid:uid": "SID .. ':' .. uid",
    "GT": "'GT'",
    "zero": "0",
}


def _lua_call(w: Write) -> str:
    args = ", ".join((f"'{w.command}'", _LUA[w.index], *(_LUA[o] for o in w.operands)))
    return f"  redis.call({args})"


def lua_functions() -> str:
    """``index(uid, created)`` and ``unindex(uid)`` for the session scripts' prelude.

    Both do nothing when P is '' (a cluster: the caller runs the pipelined form).
    """
    index = "\n".join(_lua_call(w) for w in LIVE)
    created = "\n".join(_lua_call(w) for w in CREATED)
    unindex = "\n".join(_lua_call(w) for w in GONE)
    return f"""
local function index(uid, created)
  if P == '' then return end
{index}
  if created then
{created}
  end
end

local function unindex(uid)
  if P == '' then return end
{unindex}
  if redis.call('EXISTS', {_LUA['user_sessions']}) == 0 then
    redis.call('ZREM', {_LUA['users']}, uid)
    redis.call('ZREM', {_LUA['users_by_name']}, uid)
  end
end
"""


# -- the pipelined rendering (the cluster's second step, cleanup and repair) ---------------


@dataclass(frozen=True, slots=True)
class Row:
    """The values a Write names, for one session."""

    sid: str
    uid: str
    activity: int = 0
    expires: int = 0
    now: int = 0
    prefs_ttl: int = 0


def _command(keys: Keys, w: Write, r: Row) -> tuple[Arg, ...]:
    if w.index == "user_sessions":
        key = keys.user_sessions(r.uid)
    elif w.index == "user_prefs":
        key = keys.user_prefs(r.uid)
    else:
        key = getattr(keys, w.index)
    values: dict[str, Arg] = {
        "activity": r.activity, "expires": r.expires, "now": r.now, "prefs_ttl": r.prefs_ttl,
        "sid": r.sid, "uid": r.uid, "sid:uid": expiry_member(r.sid, r.uid), "GT": "GT",
        "zero": 0,
    }  # fmt: skip
    return (w.command, key, *(values[o] for o in w.operands))


def commands(
    keys: Keys, writes: Sequence[Write], rows: Sequence[Row]
) -> tuple[tuple[Arg, ...], ...]:
    return tuple(_command(keys, w, r) for r in rows for w in writes)


def live(keys: Keys, row: Row, created: bool = False) -> Op[None]:
    """LIVE (and CREATED, for a new session) for one session: the cluster's second step."""
    yield Batch(commands(keys, (*LIVE, *CREATED) if created else LIVE, (row,)))


def gone(keys: Keys, rows: Sequence[Row], writes: Sequence[Write] = GONE) -> Op[None]:
    """GONE for these sessions, then their users leave the users index if left with none."""
    if not rows:
        return
    yield Batch(commands(keys, writes, rows))
    yield from drop_empty_users(keys, sorted({r.uid for r in rows}))


def drop_empty_users(keys: Keys, uids: Sequence[str]) -> Op[int]:
    """Remove from the users index those of ``uids`` that have no session left."""
    if not uids:
        return 0
    replies = yield Batch(tuple(
        c for u in uids for c in (("ZCARD", keys.user_sessions(u)), ("ZSCORE", keys.users, u))
    ))  # fmt: skip
    empty = [
        (u, score)
        for u, size, score in zip(uids, replies[::2], replies[1::2])
        if int(size) == 0 and score is not None
    ]
    gone = yield from remove_if_score(keys.users, empty)
    if gone:
        yield Batch((("ZREM", keys.users_by_name, *gone),))
    return len(gone)


# -- reading index members -----------------------------------------------------------------


def members(key: str, raw: Sequence[Reply]) -> Op[list[str | None]]:
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


def scored(key: str, reply: Reply) -> Op[list[tuple[str, int]]]:
    """A WITHSCORES reply of ``key`` as (member, integer score), decoded as members() does."""
    pairs = raw_pairs(reply)
    names = yield from members(key, [m for m, _ in pairs])
    return [(n, int_score(s)) for n, (_, s) in zip(names, pairs) if n is not None]


def _text_or_none(raw: Reply) -> str | None:
    try:
        return text(raw)
    except UnicodeDecodeError:
        return None


def remove_if_score(key: str, entries: Sequence[tuple[str, int | Reply]]) -> Op[list[str]]:
    """Remove members whose score is still the one read: a concurrent write keeps its entry."""
    if not entries:
        return []
    args = tuple(a for member, score in entries for a in (member, score))
    removed = yield Eval(REMOVE_IF_SCORE, (key,), args)
    return [text(m) for m in removed]
