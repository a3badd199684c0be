"""Index repair: rebuild every index entry from the session hashes, and drop stale ones.

On a Redis Cluster the index updates are a second step after each session script, so a
client that dies between the two leaves drift; on one server, drift comes from restores,
manual edits or bugs. The repair reads every session (SCAN, on every primary) and every
index (ZSCAN), so its cost grows with the data: run it by hand or rarely, never per request.

It is a sans-IO generator over store operations like the rest of the core, so both managers
run it; it is idempotent and safe while the application writes (see indexes.REPAIR and
indexes.remove_if_score for why a racing write wins).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redsession.core.base import Core
from redsession.model import validation as check
from redsession.storage import indexes
from redsession.storage.commands import Op
from redsession.storage.indexes import remove_if_score
from redsession.storage.keys import split_expiry_member
from redsession.storage.store import Store

log = logging.getLogger(__name__)

REPAIR_BATCH = 500


@dataclass(frozen=True)
class RepairReport:
    """What one repair found and changed."""

    sessions: int  # live sessions seen (their hashes)
    added: int  # index entries that were missing and were put back
    removed: int  # index entries of sessions that are gone or belong to someone else
    users_removed: int  # users dropped from the users index: they have no session left


def repair_indexes(core: Core, batch: int = REPAIR_BATCH) -> Op[RepairReport]:
    """Rebuild every index entry from the session hashes and drop stale ones (SCAN; O(data))."""
    batch = check.integer(batch, "batch", 1)
    store, now = core.store, core.now()
    sessions, added = yield from _reindex(store, batch)
    k = store.keys
    removed = yield from _prune(store, k.sessions, batch, now, lambda m: (m, None))
    removed += yield from _prune(store, k.expiry, batch, now, split_expiry_member)
    cursor: Any = None
    while True:
        cursor, uids = yield from store.upkeep.scan_user_indexes(cursor, batch)
        for uid in uids:
            if check.USER_ID.fullmatch(uid):  # other keys there are not ours
                removed += yield from _prune(
                    store, k.user_sessions(uid), batch, now, _owned_by(uid)
                )
        if cursor is None:
            break
    users_removed = yield from _prune_users(store, batch)
    report = RepairReport(sessions, added, removed, users_removed)
    log.info("index repair: %s", report)
    return report


def _owned_by(uid: str) -> Callable[[str], tuple[str, str | None]]:
    return lambda member: (member, uid)


def _reindex(store: Store, batch: int) -> Op[tuple[int, int]]:
    sessions = added = 0
    cursor: Any = None
    while True:
        cursor, sids = yield from store.upkeep.scan_sessions(cursor, batch)
        sids = [s for s in sids if check.SESSION_ID.fullmatch(s)]
        rows = yield from store.summaries(sids)
        live = [
            indexes.Row(sid, r["user_id"], int(r["last_activity"]), int(r["expires_at"]))
            for sid, r in zip(sids, rows)
            if r is not None and r["last_activity"] and r["expires_at"]
        ]
        sessions += len(live)
        added += yield from store.upkeep.reindex(live)
        if cursor is None:
            return sessions, added


def _prune(
    store: Store,
    key: str,
    batch: int,
    now: int,
    split: Callable[[str], tuple[str, str | None]],
) -> Op[int]:
    """Drop members of index ``key`` whose session is gone, or not owned by the uid it names.

    ``split`` turns a member into (session id, the owner it claims or None).
    """
    removed = 0
    cursor = 0
    while True:
        cursor, page = yield from store.upkeep.zscan(key, cursor, batch)
        parsed = [(split(m), m, score) for m, score in page]
        sids = [sid for (sid, _), _, _ in parsed]
        rows = yield from store.summaries(sids)
        stale, gone = [], []
        for ((sid, claimed), member, score), row in zip(parsed, rows):
            if row is None:
                gone.append(sid)
            if row is None or (claimed is not None and row["user_id"] != claimed):
                stale.append((member, score))
        removed += len((yield from remove_if_score(key, stale)))
        # The dump then removes the files of sessions Redis no longer has.
        yield from store.upkeep.mark_dirty(gone, now)
        if cursor == 0:
            return removed


def _prune_users(store: Store, batch: int) -> Op[int]:
    removed = 0
    cursor = 0
    while True:
        cursor, page = yield from store.upkeep.zscan(store.keys.users, cursor, batch)
        sizes = yield from store.upkeep.user_index_sizes([uid for uid, _ in page])
        empty = [(uid, score) for (uid, score), n in zip(page, sizes) if n == 0]
        removed += len((yield from remove_if_score(store.keys.users, empty)))
        if cursor == 0:
            return removed
