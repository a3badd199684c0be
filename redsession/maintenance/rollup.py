"""The analytics rollup, a worker job: fold the events written since its last run into the
per-day counters of storage/rollup.py, and sample Redis' memory for the hour.

Cost: O(events since the last run) commands, pipelined a page at a time; nothing on the
write path (the events are written anyway). Events the stream trimmed (Settings.events_maxlen)
before a run read them are not counted: run the rollup well within that many events.
"""

from __future__ import annotations

from dataclasses import dataclass

from redsession.core.base import Core
from redsession.model.models import from_us
from redsession.storage.commands import Op
from redsession.storage.rollup import RollupStore

PAGE = 1000  # events per read
MAX_PAGES = 100  # per run: a run that falls behind catches up over the next ones
# Events that say a session was active; "log" is an interaction.
ACTIVE = frozenset({"create", "log", "history", "context", "resume"})


@dataclass(frozen=True)
class RollupReport:
    events: int
    new_users: int

    def __str__(self) -> str:
        return f"{self.events} events folded, {self.new_users} new users"


def day_of(stream_id: str) -> str:
    """The UTC day (YYYY-MM-DD) of a stream id (its milliseconds)."""
    ms = int(stream_id.partition("-")[0])
    return from_us(ms * 1000).date().isoformat()


def rollup(core: Core, page: int = PAGE, max_pages: int = MAX_PAGES) -> Op[RollupReport]:
    store = RollupStore(core.store.keys)
    events = new = 0
    for _ in range(max_pages):
        _, batch = yield from store.events(page)
        if not batch:
            break
        counters: dict[str, dict[str, int]] = {}
        active: dict[str, tuple[set[str], set[str]]] = {}
        first_day: dict[str, str] = {}
        for eid, fields in batch:
            kind = fields.get("kind", "")
            if kind not in ACTIVE:
                continue
            day = day_of(eid)
            sids, uids = active.setdefault(day, (set(), set()))
            sids.add(fields.get("sid", ""))
            uid = fields.get("uid", "")
            uids.add(uid)
            first_day.setdefault(uid, day)
            figures = counters.setdefault(day, {})
            if kind == "log":
                figures["interactions"] = figures.get("interactions", 0) + 1
            elif kind == "create":
                figures["created"] = figures.get("created", 0) + 1
        unseen = yield from store.unseen(sorted(first_day))
        for uid in unseen:
            figures = counters.setdefault(first_day[uid], {})
            figures["new_users"] = figures.get("new_users", 0) + 1
        yield from store.fold(counters, active, unseen, batch[-1][0])
        events, new = events + len(batch), new + len(unseen)
        if len(batch) < page:
            break
    now = from_us(core.now())
    *_, memory = yield from core.store.counts()
    yield from store.sample_memory(now.date().isoformat(), now.hour, memory)
    return RollupReport(events=events, new_users=new)

