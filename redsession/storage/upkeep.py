"""The Redis operations behind cleanup, the dump and repair: expiry, dump marks, SCANs.

None of them is on a request path (log_interaction, resume): the worker runs cleanup and the
dump, an operator runs repair after an incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redsession.storage import indexes
from redsession.storage.commands import Batch, Op, Scan, text
from redsession.storage.indexes import remove_if_score, scored
from redsession.storage.keys import Family, Keys, expiry_member, split_expiry_member


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
        """Take expired sessions out of every index; marks them dirty so the dump drops files.

        Only entries whose expiry score is unchanged go: a session revived meanwhile stays.
        """
        members = [(expiry_member(sid, uid), score) for sid, uid, score in entries]
        gone = set((yield from remove_if_score(self.keys.expiry, members)))
        rows = [indexes.Row(sid, uid, now=now) for sid, uid, _ in entries
                if expiry_member(sid, uid) in gone]  # fmt: skip
        yield from indexes.gone(self.keys, rows, indexes.EXPIRED)
        return [r.sid for r in rows]

    def dirty(self, count: int) -> Op[list[tuple[str, int]]]:
        """Up to ``count`` (sid, stamp) changed since their last dump, oldest change first."""
        (flat,) = yield Batch((("ZRANGE", self.keys.dirty, 0, count - 1, "WITHSCORES"),))
        return (yield from scored(self.keys.dirty, flat))

    def clear_dirty(self, entries: Sequence[tuple[str, int]]) -> Op[int]:
        """Unmark dumped sessions, unless they changed again after ``stamp``."""
        return len((yield from remove_if_score(self.keys.dirty, entries)))

    def mark_dirty(self, sids: Sequence[str], now: int) -> Op[None]:
        """So the next dump writes (or, for a gone session, removes) their files."""
        if sids:
            yield Batch((("ZADD", self.keys.dirty, *(a for s in sids for a in (now, s))),))

    # -- repair: SCAN, for maintenance.repair only (never on a runtime path) ----------------

    def scan_sessions(self, cursor: Any, count: int) -> Op[tuple[Any, list[str]]]:
        """One SCAN page of the session hashes: (next cursor or None at the end, their ids)."""
        return (yield from self._scan(self.keys.session_family, "hash", cursor, count))

    def scan_user_indexes(self, cursor: Any, count: int) -> Op[tuple[Any, list[str]]]:
        """One SCAN page of the per-user session indexes: (next cursor, user ids)."""
        return (yield from self._scan(self.keys.user_sessions_family, "zset", cursor, count))

    def _scan(
        self, family: Family, type_: str, cursor: Any, count: int
    ) -> Op[tuple[Any, list[str]]]:
        nxt, raw = yield Scan(family.glob, type_, count, cursor)
        return nxt, [family.ident(text(k)) for k in raw]

    def zscan(self, key: str, cursor: int, count: int) -> Op[tuple[int, list[tuple[str, int]]]]:
        """One ZSCAN page of an index: (next cursor, 0 at the end; (member, score) pairs)."""
        ((nxt, pairs),) = yield Batch((("ZSCAN", key, cursor, "COUNT", count),))
        return int(nxt), (yield from scored(key, pairs))

    def reindex(self, rows: Sequence[indexes.Row]) -> Op[int]:
        """Put each live session back into every index it belongs in; returns entries added."""
        if not rows:
            return 0
        added = yield Batch(indexes.commands(self.keys, indexes.REPAIR, rows))
        return sum(int(n) for n in added)

    def user_index_sizes(self, uids: Sequence[str]) -> Op[list[int]]:
        if not uids:
            return []
        sizes = yield Batch(tuple(("ZCARD", self.keys.user_sessions(u)) for u in uids))
        return [int(n) for n in sizes]
