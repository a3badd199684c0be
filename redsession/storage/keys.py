"""Every Redis key name redsession uses. No other module spells the prefix or a key pattern.

Session keys carry the session id as a Redis Cluster hash tag (``{SID}``) so that one Lua
script can write all of a session's keys atomically; user keys carry the user id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from redsession.errors import ConfigError

_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# The parts every name is made of: prefix + part (+ id + tail). The Lua scripts build the
# same names from these (storage/indexes.py), so they are spelled here only.
SESSION_HEAD, SESSION_TAIL = ":s:{", "}"
LOG_SUFFIX, TOMB_SUFFIX = ":log", ":tomb"  # after the session key: one slot
OPS_SUFFIX = ":ops"  # after a session key or a user's prefs key: the operations it applied
OLD_OPS_SUFFIX = ":old"  # after an ops key: the generation of operations before it
# A session's side keys: data kept beside its history (a framework's checkpoints), in its
# slot, on its TTL, deleted, exported and restored with it. A HASH of payloads by field and
# a ZSET (all scores 0) of members that order them for range reads (ZRANGE BYLEX).
SIDE_SUFFIX, SIDE_INDEX_SUFFIX = ":side", ":side:ix"
USER_HEAD, USER_SESSIONS_TAIL, USER_PREFS_TAIL = ":u:{", "}:sessions", "}:prefs"
GLOBAL_SUFFIXES = {
    "sessions": ":sessions",
    "users": ":users",
    "expiry": ":expiry",
    "dirty": ":dirty",
    "users_by_name": ":users:by-name",
    # The event stream and the operation ids its cluster step has written, in one slot.
    "events": ":{events}",
    "event_ops": ":{events}:ops",
    # What followers of the stream (the webhooks) keep: their cursors, their dead letters.
    "event_consumers": ":{events}:consumers",
    "event_dead": ":{events}:dead",
}


@dataclass(frozen=True)
class Family:
    """A family of keys ``head + id + tail``: one per session, or one per user."""

    head: str
    tail: str

    def key(self, ident: str) -> str:
        return f"{self.head}{ident}{self.tail}"

    @property
    def glob(self) -> str:
        """The SCAN MATCH pattern of the family (the prefix has no glob characters)."""
        return f"{self.head}*{self.tail}"

    def ident(self, key: str) -> str:
        """The id inside one of the family's keys."""
        return key[len(self.head) : len(key) - len(self.tail)]


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (Settings.key_prefix)."""

    prefix: str = "redsession"
    # One session: a hash, its history log and, after delete/merge, a tombstone.
    session_family: Family = field(init=False)
    log_family: Family = field(init=False)
    tomb_family: Family = field(init=False)
    # The operation ids its writes applied (and their replies), so a retry is not applied twice.
    ops_family: Family = field(init=False)
    # One user: the index of their sessions and their preferences.
    user_sessions_family: Family = field(init=False)
    user_prefs_family: Family = field(init=False)

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ConfigError(
                f"key prefix {self.prefix!r} must match {_PREFIX.pattern} (no braces or spaces)"
            )
        p = self.prefix
        for name, family in (
            ("session_family", Family(p + SESSION_HEAD, SESSION_TAIL)),
            ("log_family", Family(p + SESSION_HEAD, SESSION_TAIL + LOG_SUFFIX)),
            ("tomb_family", Family(p + SESSION_HEAD, SESSION_TAIL + TOMB_SUFFIX)),
            ("ops_family", Family(p + SESSION_HEAD, SESSION_TAIL + OPS_SUFFIX)),
            ("user_sessions_family", Family(p + USER_HEAD, USER_SESSIONS_TAIL)),
            ("user_prefs_family", Family(p + USER_HEAD, USER_PREFS_TAIL)),
        ):
            object.__setattr__(self, name, family)

    def session(self, sid: str) -> str:
        return self.session_family.key(sid)

    def log(self, sid: str) -> str:
        return self.log_family.key(sid)

    def tomb(self, sid: str) -> str:
        return self.tomb_family.key(sid)

    def ops(self, sid: str) -> str:
        return self.ops_family.key(sid)

    def old_ops(self, sid: str) -> str:
        """The generation of the session's operations before ops(sid) (scripts.py once())."""
        return self.ops(sid) + OLD_OPS_SUFFIX

    def side(self, sid: str) -> tuple[str, str]:
        """The session's side keys: its side HASH and the ZSET that indexes it."""
        head = self.session(sid)
        return head + SIDE_SUFFIX, head + SIDE_INDEX_SUFFIX

    def session_keys(self, sid: str) -> tuple[str, ...]:
        """Every key a session owns, in one slot (the old operations outlive the rest by
        Settings.op_window at most; the others share one TTL)."""
        head = self.session(sid), self.log(sid), self.tomb(sid)
        return *head, self.ops(sid), self.old_ops(sid), *self.side(sid)

    def user_sessions(self, uid: str) -> str:
        return self.user_sessions_family.key(uid)

    def user_prefs(self, uid: str) -> str:
        return self.user_prefs_family.key(uid)

    def user_prefs_ops(self, uid: str) -> str:
        """HASH op id -> first reply: the preference writes applied (one slot with them)."""
        return self.user_prefs(uid) + OPS_SUFFIX

    # Global indexes.
    @property
    def sessions(self) -> str:
        """ZSET session id -> last activity (µs)."""
        return self.prefix + GLOBAL_SUFFIXES["sessions"]

    @property
    def users(self) -> str:
        """ZSET user id -> last activity (µs)."""
        return self.prefix + GLOBAL_SUFFIXES["users"]

    @property
    def expiry(self) -> str:
        """ZSET "sid:uid" -> expires_at (µs); cleanup reads only what has expired."""
        return self.prefix + GLOBAL_SUFFIXES["expiry"]

    @property
    def dirty(self) -> str:
        """ZSET session id -> time of its last change (µs), for the incremental dump."""
        return self.prefix + GLOBAL_SUFFIXES["dirty"]

    @property
    def users_by_name(self) -> str:
        """ZSET user id -> 0: users in name order, for listing by prefix (ZRANGEBYLEX)."""
        return self.prefix + GLOBAL_SUFFIXES["users_by_name"]

    @property
    def events(self) -> str:
        """STREAM of events (create, log, merge, delete, ...): ids and kinds, never text."""
        return self.prefix + GLOBAL_SUFFIXES["events"]

    @property
    def event_ops(self) -> str:
        """HASH op id -> time: the events a cluster's second step has written (dedupe)."""
        return self.prefix + GLOBAL_SUFFIXES["event_ops"]

    @property
    def event_consumers(self) -> str:
        """HASH "cursor:<consumer>" -> the last event id it is done with, and
        "dead:<consumer>" -> how many events it gave up on (dead letters)."""
        return self.prefix + GLOBAL_SUFFIXES["event_consumers"]

    @property
    def event_dead(self) -> str:
        """STREAM of dead letters: events a consumer gave up on, with its name and why."""
        return self.prefix + GLOBAL_SUFFIXES["event_dead"]

    # The worker.
    @property
    def worker_leader(self) -> str:
        return f"{self.prefix}:worker:leader"

    @property
    def worker_heartbeat(self) -> str:
        return f"{self.prefix}:worker:hb"

    @property
    def worker_jobs(self) -> str:
        """HASH job name -> JSON of its last run (when, whether it worked, what it did)."""
        return f"{self.prefix}:worker:jobs"

    # The analytics rollup (maintenance/rollup.py): figures per UTC day, from the event stream.
    @property
    def rollup_cursor(self) -> str:
        """STRING: the id of the last event the rollup has counted."""
        return f"{self.prefix}:rollup:cursor"

    @property
    def rollup_seen_users(self) -> str:
        """SET of every user the rollup has met: tells a new user from a returning one."""
        return f"{self.prefix}:rollup:users"

    def rollup_day(self, day: str) -> str:
        """HASH of one day's counters (interactions, new users, memory by hour)."""
        return f"{self.prefix}:rollup:day:{day}"

    def rollup_day_sessions(self, day: str) -> str:
        """HyperLogLog of the sessions active on one day."""
        return f"{self.prefix}:rollup:day:{day}:sessions"

    def rollup_day_users(self, day: str) -> str:
        """HyperLogLog of the users active on one day."""
        return f"{self.prefix}:rollup:day:{day}:users"


def expiry_member(sid: str, uid: str) -> str:
    """The expiry index member: session ids have no ':', so the first ':' splits it."""
    return f"{sid}:{uid}"


def split_expiry_member(member: str) -> tuple[str, str]:
    sid, _, uid = member.partition(":")
    return sid, uid
