"""The dashboard's analytics: per-day figures from the rollup (maintenance/rollup.py) and the
shape of the live sessions from a random sample. No read scans every session: the cost is
O(days) for the rollup's counters and O(sample) for the rest, whatever the store holds.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta, timezone

import orjson

from redsession.core.base import Core
from redsession.core.status import DAY_US
from redsession.errors import InvalidInput
from redsession.model import validation as check
from redsession.model.models import Analytics, DayFigures, MemorySample, from_us
from redsession.storage.commands import Op
from redsession.storage.rollup import RollupStore

SAMPLE = 200  # sessions read for the distribution and the topics
MAX_DAYS = 35  # the rollup keeps its day keys this long (storage.rollup.DAY_KEEP)
TOP_TOPICS = 10
# Interactions per session: bucket label -> its lowest count (the next label's is its end).
BUCKETS = (("0", 0), ("1", 1), ("2-5", 2), ("6-10", 6), ("11-20", 11), ("21-50", 21),
           ("51-100", 51), ("101+", 101))  # fmt: skip


def bucket(total: int) -> str:
    label = BUCKETS[0][0]
    for name, low in BUCKETS:
        if total >= low:
            label = name
    return label


def analytics(core: Core, days: int = 30, sample: int = SAMPLE) -> Op[Analytics]:
    for name, v, most in (("days", days, MAX_DAYS), ("sample", sample, 10_000)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= most:
            raise InvalidInput(f"{name} must be an integer from 1 to {most}, not {check.show(v)}")
    store = RollupStore(core.store.keys)
    now = core.now()
    today = from_us(now).date()
    span = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    rows = yield from store.days([d.isoformat() for d in span])
    figures, memory = [], []
    for day, (counters, sessions, users) in zip(span, rows):
        figures.append(DayFigures(
            day=day, active_sessions=sessions, active_users=users,
            new_users=int(counters.get("new_users", 0)),
            interactions=int(counters.get("interactions", 0)),
            created=int(counters.get("created", 0)),
        ))  # fmt: skip
        memory += _memory(day, counters)
    picked = yield from store.sample(sample)
    spread = Counter(bucket(total) for _, total, _ in picked)
    topics: Counter[str] = Counter()
    for _, _, raw in picked:
        topics.update(set(_topics(raw)))
    expiring = yield from core.store.upkeep.count_expiring(now, now + DAY_US)
    return Analytics(
        days=figures, memory=memory, sampled=len(picked),
        interactions_per_session={name: spread.get(name, 0) for name, _ in BUCKETS},
        top_topics=topics.most_common(TOP_TOPICS), expiring_24h=expiring,
    )  # fmt: skip


def _memory(day: date, counters: dict[str, str]) -> list[MemorySample]:
    out = []
    for name, value in sorted(counters.items()):
        if name.startswith("memory:"):
            hour = int(name.removeprefix("memory:"))
            at = datetime.combine(day, time(hour), tzinfo=timezone.utc)
            out.append(MemorySample(at=at, used_memory=int(value)))
    return out


def _topics(raw: str | None) -> list[str]:
    if raw is None:
        return []
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []
