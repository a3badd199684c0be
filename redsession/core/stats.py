"""Store-wide figures: counts, memory, the oldest and newest activity, upcoming expiries."""

from __future__ import annotations

from redsession.core.base import Core
from redsession.core.sessions import session_walk
from redsession.core.status import DAY_US
from redsession.model.models import StoreStats, from_us
from redsession.storage.commands import Op


def stats(core: Core) -> Op[StoreStats]:
    n_s, n_u, oldest, newest, memory = yield from core.store.counts()
    total, walk = 0, session_walk(core, None)
    while not walk.done:  # O(sessions): stats reads them all by nature
        total += yield from core.store.totals((yield from walk.next_page()))
    now = core.now()
    expiring = yield from core.store.upkeep.count_expiring(now, now + DAY_US)
    events, dead = yield from core.store.stream.counts()
    return StoreStats(
        sessions=n_s, users=n_u, interactions=total, redis_used_memory=memory,
        oldest_activity=from_us(oldest[0][1]) if oldest else None,
        newest_activity=from_us(newest[0][1]) if newest else None,
        expiring_24h=expiring, events=events, webhook_dead_letters=dead,
    )  # fmt: skip
