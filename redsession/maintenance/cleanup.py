"""Cleanup: forget sessions Redis has expired, in the indexes and on disk.

Redis deletes an expired session's keys by itself; what it cannot do is take the session out
of redsession's indexes or delete its dump file. Cleanup reads only the expiry index up to
now, batch by batch, so it costs O(expired), not O(sessions).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from redsession.core.base import Core
from redsession.maintenance.snapshots import remove_dump_files
from redsession.storage.commands import Op

BATCH = 1000


class CleanupReport(BaseModel):
    """What one cleanup did (or, with dry_run, would do)."""

    model_config = ConfigDict(frozen=True)

    dry_run: bool
    sessions: int  # expired sessions taken out of the indexes
    session_ids: list[str]
    dump_files_removed: int


def cleanup_expired_sessions(
    core: Core, data_dir: Path, *, dry_run: bool = False, batch: int = BATCH
) -> Op[CleanupReport]:
    """Take expired sessions out of every index, then delete their dump files."""
    now = core.now()
    upkeep = core.store.upkeep
    removed: list[str] = []
    skip = 0  # entries that say expired but whose session lives (index drift)
    while True:
        entries = (yield from upkeep.expired(now, skip + batch))[skip:]
        if not entries:
            break
        alive = yield from core.store.exists([sid for sid, _, _ in entries])
        dead = [e for e, a in zip(entries, alive) if not a]
        skip += len(entries) - len(dead)
        if dry_run:
            removed += [sid for sid, _, _ in dead]
            skip += len(dead)
        else:
            forgotten = yield from upkeep.forget(dead, now)
            removed += forgotten
            yield from _expire_events(core, dead, set(forgotten), now)
        if len(entries) < batch:
            break
    files = 0 if dry_run else remove_dump_files(data_dir, removed)
    return CleanupReport(
        dry_run=dry_run, sessions=len(removed), session_ids=removed, dump_files_removed=files
    )


def _expire_events(
    core: Core, dead: list[tuple[str, str, int]], forgotten: set[str], now: int
) -> Op[None]:
    """An 'expire' event per session forgotten, its operation id named after the expiry it
    had, so a cleanup retried or run twice writes each once."""
    events = [
        ("expire", sid, uid, f"expire:{sid}:{expires}", ())
        for sid, uid, expires in dead
        if sid in forgotten
    ]
    yield from core.store.events_of(events, now)
