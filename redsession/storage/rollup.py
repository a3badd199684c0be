"""The analytics rollup's commands: read the event stream from a cursor, fold what it says
into per-day counters, and read those counters back.

The session scripts already put one event per change on ``P:{events}`` (ids and kinds, never
content); the rollup reads that stream, so the figures cost the write path nothing. Per UTC
day ``D`` it keeps a hash of counters and two HyperLogLogs (the sessions and the users active
that day, ~12 KiB each at most, 0.81 % standard error); one SET of every user met tells a new
user from a returning one. Day keys expire after ``DAY_KEEP``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from redsession.storage.commands import Arg, Batch, Op, hash_reply, text
from redsession.storage.keys import Keys

DAY_KEEP = timedelta(days=35)  # the dashboard shows 30 days
Event = tuple[str, dict[str, str]]  # (stream id, fields)


class RollupStore:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def events(self, count: int) -> Op[tuple[str | None, list[Event]]]:
        """(the cursor, up to ``count`` events after it, oldest first)."""
        (cursor,) = yield Batch((("GET", self.keys.rollup_cursor),))
        start = "-" if cursor is None else f"({text(cursor)}"
        (reply,) = yield Batch((("XRANGE", self.keys.events, start, "+", "COUNT", count),))
        return (None if cursor is None else text(cursor)), [_entry(e) for e in reply or ()]

    def unseen(self, users: Sequence[str]) -> Op[list[str]]:
        """The users of ``users`` the rollup has never met."""
        if not users:
            return []
        (flags,) = yield Batch((("SMISMEMBER", self.keys.rollup_seen_users, *users),))
        return [u for u, seen in zip(users, flags) if not int(seen)]

    def fold(
        self,
        counters: dict[str, dict[str, int]],
        active: dict[str, tuple[set[str], set[str]]],
        new_users: Sequence[str],
        cursor: str,
    ) -> Op[None]:
        """Add day -> {counter: n}, day -> (sessions, users) active, remember ``new_users``,
        and move the cursor to ``cursor``, in one pipeline."""
        k, keep = self.keys, int(DAY_KEEP.total_seconds())
        cmds: list[tuple[Arg, ...]] = []
        for day, figures in counters.items():
            for name, n in figures.items():
                cmds.append(("HINCRBY", k.rollup_day(day), name, n))
            cmds.append(("EXPIRE", k.rollup_day(day), keep))
        for day, (sids, uids) in active.items():
            for key, members in ((k.rollup_day_sessions(day), sids),
                                 (k.rollup_day_users(day), uids)):  # fmt: skip
                if members:
                    cmds += [("PFADD", key, *sorted(members)), ("EXPIRE", key, keep)]
        if new_users:
            cmds.append(("SADD", k.rollup_seen_users, *new_users))
        cmds.append(("SET", k.rollup_cursor, cursor))
        yield Batch(tuple(cmds))

    def sample_memory(self, day: str, hour: int, used: int) -> Op[None]:
        key = self.keys.rollup_day(day)
        yield Batch((("HSET", key, f"memory:{hour:02d}", used),
                     ("EXPIRE", key, int(DAY_KEEP.total_seconds()))))  # fmt: skip

    def days(self, days: Sequence[str]) -> Op[list[tuple[dict[str, str], int, int]]]:
        """For each day: (its counters, sessions active, users active)."""
        k = self.keys
        cmds: list[tuple[Arg, ...]] = []
        for d in days:
            cmds += [("HGETALL", k.rollup_day(d)), ("PFCOUNT", k.rollup_day_sessions(d)),
                     ("PFCOUNT", k.rollup_day_users(d))]  # fmt: skip
        reply = yield Batch(tuple(cmds))
        return [
            (hash_reply(reply[i]), int(reply[i + 1]), int(reply[i + 2]))
            for i in range(0, len(reply), 3)
        ]

    def sample(self, count: int) -> Op[list[tuple[str, int, str | None]]]:
        """Up to ``count`` random live sessions: (id, total entries, topics JSON)."""
        (sids,) = yield Batch((("ZRANDMEMBER", self.keys.sessions, count),))
        ids = [text(s) for s in sids or ()]
        if not ids:
            return []
        field = ("total_interactions", "topics")
        rows = yield Batch(tuple(("HMGET", self.keys.session(s), *field) for s in ids))
        return [
            (sid, int(total), None if topics is None else text(topics))
            for sid, (total, topics) in zip(ids, rows)
            if total is not None  # expired since it was picked
        ]


def _entry(entry: Any) -> Event:
    # redis-py parses XRANGE into (id, {field: value}); a raw reply has a flat field list.
    eid, fields = entry
    if isinstance(fields, dict):
        return text(eid), {text(f): text(v) for f, v in fields.items()}
    it = iter(fields)
    return text(eid), {text(f): text(v) for f, v in zip(it, it)}
