"""Core: what every session operation needs (the store, the settings, the cipher, the clock).

The operations themselves are functions in the modules beside this one, one module per noun
(sessions, history, transfer, upkeep). Each is a generator over store commands that validates
its input, decides policy and composes store operations with ``yield from``: it does no I/O,
so SessionManager and AsyncSessionManager run the very same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from redsession.config import Settings
from redsession.errors import SessionMerged, SessionNotFound
from redsession.model import validation as check
from redsession.model.codec import decode_history
from redsession.model.crypto import Cipher
from redsession.model.models import Interaction, Item, to_us, utcnow
from redsession.storage.commands import Op
from redsession.storage.store import Stamp, Store

T = TypeVar("T")
MAX_MERGE_HOPS = 16  # a merged id redirects to its primary, which may itself be merged


class Core:
    """The shared context of the operations; one per manager."""

    def __init__(
        self, store: Store, settings: Settings, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.ttl_us = settings.session_ttl // timedelta(microseconds=1)
        self.cipher = Cipher([k.get_secret_value() for k in settings.encryption_keys])

    def now(self) -> int:
        """The clock, in µs since the epoch."""
        if self.clock is utcnow:  # the default: the same instant, without a datetime
            return time.time_ns() // 1000
        return to_us(self.clock())

    def stamp(
        self, activity: int | None = None, expires: int | None = None, op: str = ""
    ) -> Stamp:
        """The times a call carries: now, its activity (default now), its new expiry; and a
        write's operation id (see ``op``)."""
        now = self.now()
        return Stamp(
            activity=now if activity is None else activity,
            expires=now + self.ttl_us if expires is None else expires,
            now=now,
            op=op,
        )

    @staticmethod
    def op(op_id: str | None) -> str:
        """A write's operation id: the caller's, checked, or a new one. Every script of the
        call carries it, so the driver's retries (and a caller repeating the call with the
        same id) apply the write once."""
        return check.new_entry_id() if op_id is None else check.op_id(op_id)

    def json(self, value: object, what: str) -> bytes:
        """``value`` as JSON within the configured size and depth limits."""
        s = self.settings
        return check.json_object(
            value, what, max_bytes=s.max_context_bytes, max_depth=s.max_json_depth
        )

    def owner(self, user_id: str | None) -> str | None:
        """The owner to check a session against; None for an operator (any owner)."""
        return None if user_id is None else check.user_id(user_id)

    def decode(self, raw: Sequence[bytes]) -> list[Interaction | Item]:
        return decode_history(raw, self.cipher)

    def follow(self, sid: str, read: Callable[[str], Op[T]], follow_merged: bool = True) -> Op[T]:
        """Run a read, following a merged id to its primary (unless ``follow_merged`` is off:
        then a merged id raises SessionMerged).

        A redirect that ends nowhere (the primary is gone, or, after a merge across users,
        belongs to someone other than the caller) answers for the id asked for, as a missing
        session does: the caller learns nothing of the primary.
        """
        asked = sid
        for _ in range(MAX_MERGE_HOPS):
            try:
                return (yield from read(sid))
            except SessionMerged as m:
                if not follow_merged:
                    raise
                sid = m.primary_id
            except SessionNotFound as e:
                if sid == asked:
                    raise
                raise SessionNotFound(asked) from e
        raise SessionNotFound(asked, f"session {asked!r}: merge chain longer than {MAX_MERGE_HOPS}")
