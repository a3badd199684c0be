"""The Redis operations behind cleanup, the dump and repair: expiry, dump marks, SCANs.

None of them is on a request path (log_interaction, resume): the worker runs cleanup and the
dump, an operator runs repair after an incident. Like store.py, only this module and the
drivers speak Redis commands.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redsession import scripts
from redsession.codec import Reply, text
from redsession.commands import Arg, Batch, Eval, Op, Scan, int_score, raw_pairs
from redsession.keys import Keys, expiry_member, split_expiry_member

log = logging.getLogger(__name__)


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


class IndexUpkeep:
    """Operations on the expiry index, the dump marks and (for repair) every index."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def expired(self, cutoff: int, count: int) -> Op[list[tuple[str, str, int]]]:
        """Up to ``count`` (sid, uid, expires_at) whose index entry says they have expired."""
        (flat,) = yield Batch(
            (("ZRANGEBYSCORE", self.keys.expiry, "-inf", cutoff, "WITHSCORES", "LIMIT", 0, count),)
        )
        out = []
        for member, score in (yield from scored(self.keys.expiry, flat)):
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
        return (yield from scored(self.keys.dirty, flat))

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
        return int(nxt), (yield from scored(key, pairs))

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
