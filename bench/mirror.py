"""The SQL mirror's cost against the number of sessions, with the same number changed."""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import redis
import sqlalchemy as sa

from bench import data
from bench.report import Table
from redsession import SessionManager
from redsession.config import Settings
from redsession.mirror import schema
from redsession.mirror.database import Database
from redsession.mirror.rows import CURSOR


def mirror_cost(url: str, *, smoke: bool) -> list[Table]:
    """A mirror run after ``changed`` sessions changed, among 1k and 100k sessions (SQLite)."""
    sizes, changed = ([200, 2_000], 20) if smoke else ([1_000, 100_000], 1_000)
    repeats = 1 if smoke else 3
    t = Table(
        "SQL mirror run against the number of sessions (the same number changed)",
        ["sessions", "changed", "mirror ms", "µs per changed", "x the smallest"],
    )
    runs = [(total, _one_size(url, total, changed, repeats)) for total in sizes]
    base = runs[0][1]
    for total, ms in runs:
        t.rows.append([f"{total:,}", f"{changed:,}", f"{ms:,.1f}",
                       f"{ms * 1000 / changed:,.0f}", f"{ms / base:.2f}x"])  # fmt: skip
    t.notes.append(
        "SQLite in a temporary dir (WAL, one transaction per session); sessions "
        f"hold 2 interactions; each run follows {changed:,} log_interaction calls on distinct "
        f"sessions; median of {repeats} runs. The mirror held every session before the changes"
    )
    t.notes.append("a ratio near 1x means the run costs what the changed sessions cost")
    return [t]


def _one_size(url: str, total: int, changed: int, repeats: int) -> float:
    with redis.Redis.from_url(url) as client, tempfile.TemporaryDirectory() as tmp:
        client.flushall()
        manager = SessionManager(client, Settings(redis_url=url, data_dir=Path(tmp)))
        sids = [(f"q{i:07d}", f"quser{i % max(1, total // 5):06d}") for i in range(total)]
        data.load(manager, client, (data.export_doc(s, u, 2) for s, u in sids))
        db = Database(f"sqlite:///{Path(tmp) / 'mirror.sqlite3'}")
        db.open()
        _fill(db, sids, client.xrevrange(manager.keys.events, count=1)[0][0].decode())
        runs = []
        step = total // changed
        for r in range(repeats):
            for k in range(changed):
                sid, uid = sids[(r + k * step) % total]
                manager.log_interaction(sid, user_message="again", user_id=uid)
            t0 = time.perf_counter()
            report = manager.mirror_sql(db)
            runs.append((time.perf_counter() - t0) * 1000)
            if report.upserted != changed or report.full_copy:
                raise RuntimeError(f"the mirror run did not do what was measured: {report}")
        db.close()
        client.flushall()
    return statistics.median(runs)


def _fill(db: Database, sids: list[tuple[str, str]], cursor: str) -> None:
    """The mirror as a run before the changes left it: every session (2 entries each), and
    the cursor at the stream's end. Written in bulk: the full copy is not what is measured."""
    now = datetime.now(timezone.utc)
    sessions = [
        {"session_id": s, "user_id": u, "created_at": now, "last_activity": now,
         "expires_at": now, "total_interactions": 2, "version": 0, "context": "{}",
         "state": "{}", "scope": None, "merged_from": "[]", "expired": False,
         "mirrored_at": now}
        for s, u in sids
    ]  # fmt: skip
    entries = [
        {"session_id": s, "position": p, "entry_id": f"{s}-{p}", "kind": "interaction",
         "timestamp": now, "user_message": "hello", "assistant_response": "hi",
         "metadata": "{}", "topics": "[]", "item": None}
        for s, _ in sids for p in range(2)
    ]  # fmt: skip
    with db.transaction() as conn:
        conn.execute(sa.insert(schema.sessions), sessions)
        conn.execute(sa.insert(schema.entries), entries)
        conn.execute(sa.insert(schema.mirror_state), [{"name": CURSOR, "value": cursor}])
