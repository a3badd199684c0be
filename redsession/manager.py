"""SessionManager and AsyncSessionManager: the public API, one thin method per operation.

Both run the same operations from core.SessionCore; they differ only in how the Redis
commands are executed (drivers.SyncDriver or drivers.AsyncDriver).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import redis
import redis.asyncio

from redsession.commands import Op
from redsession.config import Settings
from redsession.connection import async_client, sync_client
from redsession.core import SessionCore
from redsession.drivers import AsyncDriver, SyncDriver
from redsession.index_walk import IndexWalk
from redsession.keys import Keys
from redsession.models import (
    Interaction,
    Session,
    SessionExport,
    SessionPage,
    StoreStats,
    to_us,
    utcnow,
)
from redsession.repair import RepairReport, repair_op
from redsession.store import Store

T = TypeVar("T")
CLEANUP_BATCH = 1000


class _Base:
    def __init__(
        self,
        client: Any,
        settings: Settings | None,
        clock: Callable[[], datetime],
        cluster: bool,
    ) -> None:
        self.settings = settings or Settings()
        self.keys = Keys(self.settings.key_prefix)
        self.core = SessionCore(
            Store(self.keys, self.settings, cluster=cluster), self.settings, clock
        )
        self.client = client


class SessionManager(_Base):
    """Sessions in Redis, for synchronous code. Thread-safe (redis-py pools connections)."""

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        settings: Settings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(client, settings, clock, isinstance(client, redis.RedisCluster))
        self._driver = SyncDriver(client)

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> SessionManager:
        """Connect to ``url`` (or REDSESSION_REDIS_URL); keyword arguments override Settings."""
        s = Settings(**settings)
        return cls(sync_client(url, s), s)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SessionManager:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def create_session(
        self,
        user_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session for ``user_id``; the id is generated unless ``session_id`` is given."""
        return self._driver.run(self.core.create_session(user_id, context, session_id))

    def create_or_resume_session(self, user_id: str, session_id: str | None = None) -> str:
        """``session_id`` if it is live and belongs to ``user_id``, else a new session's id."""
        return self._driver.run(self.core.create_or_resume_session(user_id, session_id))

    def resume_session(
        self, session_id: str, user_id: str, *, history: int | None = None
    ) -> Session:
        """The session with its newest interactions; counts as activity (refreshes expiry).

        Raises SessionNotFound, or PermissionDenied when another user owns it.
        A merged session's id resumes its primary.
        """
        return self._driver.run(self.core.resume_session(session_id, user_id, history))

    def get_session(
        self, session_id: str, *, history: int = 0, user_id: str | None = None
    ) -> Session:
        """The session without touching its expiry, with ``history`` newest interactions."""
        return self._driver.run(self.core.get_session(session_id, history, user_id))

    def get_history(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
        user_id: str | None = None,
    ) -> list[Interaction]:
        """Interactions oldest first: the newest ``limit`` of those at positions < ``before``."""
        return self._driver.run(self.core.get_history(session_id, limit, before, user_id))

    def log_interaction(
        self,
        session_id: str,
        *,
        user_message: str,
        assistant_response: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        topics: Sequence[str] | None = None,
        user_id: str | None = None,
    ) -> Interaction:
        """Append one interaction: one round trip, O(1) in the history length."""
        return self._driver.run(
            self.core.log_interaction(
                session_id, user_message, assistant_response, metadata, topics, user_id
            )
        )

    def update_context(
        self, session_id: str, patch: Mapping[str, Any], *, user_id: str | None = None
    ) -> Session:
        """Deep-merge ``patch`` into the context (None deletes a key); no patch is lost."""
        return self._driver.run(self.core.update_context(session_id, patch, user_id))

    def set_preferences(self, user_id: str, prefs: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``prefs`` into the user's preferences (None removes a key); returns them all."""
        return self._driver.run(self.core.set_preferences(user_id, prefs))

    def get_preferences(self, user_id: str) -> dict[str, Any]:
        return self._driver.run(self.core.get_preferences(user_id))

    def list_active_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        """Summaries, newest activity first; pass ``next_cursor`` back for the next page."""
        return self._driver.run(self.core.list_active_sessions(user_id, limit, cursor))

    def run(self, op: Op[T]) -> T:
        """Run a store operation (a generator from core or rotation) on this manager's client."""
        return self._driver.run(op)

    def iter_user_ids(self) -> Iterator[str]:
        """Every user with a live session, each once, oldest activity first (see IndexWalk)."""
        return self._walk(self.core.user_walk())

    def iter_session_ids(self, user_id: str | None = None) -> Iterator[str]:
        """Every session id (of one user, or all), each once, oldest activity first.

        A session that lives throughout the walk is reached even if it is written meanwhile
        (see IndexWalk); one created during the walk may or may not be.
        """
        return self._walk(self.core.session_walk(user_id))

    def _walk(self, walk: IndexWalk) -> Iterator[str]:
        while not walk.done:
            yield from self._driver.run(walk.next_page())

    def export_session_data(self, session_id: str, *, user_id: str | None = None) -> dict[str, Any]:
        """The session and its whole history as the versioned export document (JSON-ready)."""
        return self._driver.run(self.core.export_session_data(session_id, user_id))

    def export_session(self, session_id: str, *, user_id: str | None = None) -> SessionExport:
        return self._driver.run(self.core.export(session_id, user_id))

    def import_session_data(
        self, doc: object, *, overwrite: bool = False, expect: tuple[int, int] | None = None
    ) -> str:
        """Load an export document (dict or JSON); keeps its id and remaining TTL.

        With ``expect`` (version, total_interactions), replace the live session only while
        it is still in that state; ConcurrentModification if it changed, SessionNotFound if
        it is gone.
        """
        return self._driver.run(self.core.import_session_data(doc, overwrite, expect))

    def merge_sessions(
        self,
        primary_id: str,
        secondary_id: str,
        *,
        user_id: str | None = None,
        allow_cross_user: bool = False,
    ) -> Session:
        """Fold ``secondary_id`` into ``primary_id``; the secondary then redirects to it.

        Idempotent, and safe to re-run after a crash at any step.
        """
        return self._driver.run(
            self.core.merge_sessions(primary_id, secondary_id, user_id, allow_cross_user)
        )

    def delete_session(self, session_id: str, *, user_id: str | None = None) -> None:
        """Delete the session; a tombstone stops late writes from bringing it back."""
        self._driver.run(self.core.delete_session(session_id, user_id))

    def cleanup_expired_sessions(self, *, dry_run: bool = False) -> int:
        """Drop index entries of sessions Redis has expired; returns how many."""
        return len(self.expired_session_ids(dry_run=dry_run))

    def expired_session_ids(self, *, dry_run: bool = False) -> list[str]:
        return self._driver.run(self.core.cleanup_expired_sessions(CLEANUP_BATCH, dry_run))

    def stats(self) -> StoreStats:
        return self._driver.run(self.core.stats())

    def changed_sessions(self, count: int) -> list[tuple[str, int]]:
        return self._driver.run(self.core.changed_sessions(count))

    def mark_dumped(self, entries: Sequence[tuple[str, int]]) -> int:
        return self._driver.run(self.core.mark_dumped(entries))

    def repair_indexes(self) -> RepairReport:
        """Rebuild every index entry from the session hashes and drop stale ones (SCAN)."""
        return self._driver.run(repair_op(self.core.store, to_us(self.core.clock())))


class AsyncSessionManager(_Base):
    """Sessions in Redis, for asyncio code: the same operations as SessionManager."""

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        settings: Settings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            client, settings, clock, isinstance(client, redis.asyncio.RedisCluster)
        )
        self._driver = AsyncDriver(client)

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> AsyncSessionManager:
        s = Settings(**settings)
        return cls(async_client(url, s), s)

    async def close(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncSessionManager:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def create_session(
        self,
        user_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        return await self._driver.run(self.core.create_session(user_id, context, session_id))

    async def create_or_resume_session(self, user_id: str, session_id: str | None = None) -> str:
        return await self._driver.run(self.core.create_or_resume_session(user_id, session_id))

    async def resume_session(
        self, session_id: str, user_id: str, *, history: int | None = None
    ) -> Session:
        return await self._driver.run(self.core.resume_session(session_id, user_id, history))

    async def get_session(
        self, session_id: str, *, history: int = 0, user_id: str | None = None
    ) -> Session:
        return await self._driver.run(self.core.get_session(session_id, history, user_id))

    async def get_history(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
        user_id: str | None = None,
    ) -> list[Interaction]:
        return await self._driver.run(self.core.get_history(session_id, limit, before, user_id))

    async def log_interaction(
        self,
        session_id: str,
        *,
        user_message: str,
        assistant_response: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        topics: Sequence[str] | None = None,
        user_id: str | None = None,
    ) -> Interaction:
        return await self._driver.run(
            self.core.log_interaction(
                session_id, user_message, assistant_response, metadata, topics, user_id
            )
        )

    async def update_context(
        self, session_id: str, patch: Mapping[str, Any], *, user_id: str | None = None
    ) -> Session:
        return await self._driver.run(self.core.update_context(session_id, patch, user_id))

    async def set_preferences(self, user_id: str, prefs: Mapping[str, Any]) -> dict[str, Any]:
        return await self._driver.run(self.core.set_preferences(user_id, prefs))

    async def get_preferences(self, user_id: str) -> dict[str, Any]:
        return await self._driver.run(self.core.get_preferences(user_id))

    async def list_active_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        return await self._driver.run(self.core.list_active_sessions(user_id, limit, cursor))

    async def iter_session_ids(self, user_id: str | None = None) -> AsyncIterator[str]:
        walk = self.core.session_walk(user_id)
        while not walk.done:
            for sid in await self._driver.run(walk.next_page()):
                yield sid

    async def export_session_data(
        self, session_id: str, *, user_id: str | None = None
    ) -> dict[str, Any]:
        return await self._driver.run(self.core.export_session_data(session_id, user_id))

    async def export_session(
        self, session_id: str, *, user_id: str | None = None
    ) -> SessionExport:
        return await self._driver.run(self.core.export(session_id, user_id))

    async def import_session_data(
        self, doc: object, *, overwrite: bool = False, expect: tuple[int, int] | None = None
    ) -> str:
        return await self._driver.run(self.core.import_session_data(doc, overwrite, expect))

    async def merge_sessions(
        self,
        primary_id: str,
        secondary_id: str,
        *,
        user_id: str | None = None,
        allow_cross_user: bool = False,
    ) -> Session:
        return await self._driver.run(
            self.core.merge_sessions(primary_id, secondary_id, user_id, allow_cross_user)
        )

    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> None:
        await self._driver.run(self.core.delete_session(session_id, user_id))

    async def cleanup_expired_sessions(self, *, dry_run: bool = False) -> int:
        return len(await self.expired_session_ids(dry_run=dry_run))

    async def expired_session_ids(self, *, dry_run: bool = False) -> list[str]:
        return await self._driver.run(self.core.cleanup_expired_sessions(CLEANUP_BATCH, dry_run))

    async def stats(self) -> StoreStats:
        return await self._driver.run(self.core.stats())

    async def changed_sessions(self, count: int) -> list[tuple[str, int]]:
        return await self._driver.run(self.core.changed_sessions(count))

    async def mark_dumped(self, entries: Sequence[tuple[str, int]]) -> int:
        return await self._driver.run(self.core.mark_dumped(entries))

    async def repair_indexes(self) -> RepairReport:
        return await self._driver.run(repair_op(self.core.store, to_us(self.core.clock())))
