"""A walk over every member of an activity index while the application keeps writing to it.

export --all and rotate-keys must reach every session (and user) that lives throughout the walk,
while each write moves its session to the newest end of the index. Paging newest first by
offset missed a session touched before the walk reached it (it jumped behind the walk) and
repeated another (the rest shifted by one). This walk goes oldest first instead, and resumes
after the last score it read: a touched session moves ahead of the walk, so it is still
reached; an id met again is not yielded twice. The walk ends at the first empty page.
"""

from __future__ import annotations

from redsession.storage.commands import Op
from redsession.storage.store import Store

PAGE = 500  # ids per round trip


class IndexWalk:
    """Pages of ids not yielded before; run ``next_page()`` until ``done``."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key
        self.done = False
        self._after: int | None = None
        self._seen: set[str] = set()

    def next_page(self) -> Op[list[str]]:
        rows = yield from self.store.index_page(self.key, self._after, PAGE)
        if not rows:
            self.done = True
            return []
        self._after = rows[-1][1]
        fresh = [m for m, _ in rows if m not in self._seen]
        self._seen.update(fresh)
        return fresh
