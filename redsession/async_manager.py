"""AsyncSessionManager: the public API for asyncio code.

Each method is the coroutine form of SessionManager's method of the same name (see its
docstrings): the same operation of redsession.core or redsession.maintenance, run on an
asyncio driver. tests/test_async_manager.py holds the two classes to the same names and
signatures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio

from redsession.config import Settings
from redsession.core import (
    analytics,
    checkpoints,
    events,
    history,
    sessions,
    stats,
    status,
    transfer,
)
from redsession.maintenance import cleanup, repair, restore, rollup, rotation, snapshots
from redsession.maintenance.cleanup import CleanupReport
from redsession.maintenance.repair import RepairReport
from redsession.maintenance.restore import RestoreReport
from redsession.maintenance.rollup import RollupReport
from redsession.maintenance.rotation import RotationReport
from redsession.maintenance.snapshots import DumpReport, Progress
from redsession.manager import ManagerBase
from redsession.mirror import run as mirror
from redsession.mirror.database import Database
from redsession.mirror.rows import Rows
from redsession.mirror.run import MirrorReport
from redsession.model.models import (
    Analytics,
    EventPage,
    Interaction,
    Item,
    JobRun,
    Overview,
    Session,
    SessionExport,
    SessionPage,
    StoreStats,
    UserPage,
    WorkerStatus,
    utcnow,
)
from redsession.storage import libraries
from redsession.storage.checkpoints import Row as CheckpointRow
from redsession.storage.commands import Op
from redsession.storage.connection import async_client
from redsession.storage.drivers import AsyncDriver, AsyncRunner
from redsession.storage.libraries import PruneReport

if TYPE_CHECKING:
    from redsession.storage.glide import Glide

T = TypeVar("T")


class AsyncSessionManager(ManagerBase):
    """Sessions in Redis, for asyncio code: the same operations as SessionManager."""

    _driver: AsyncRunner[Any]

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster | Glide,
        settings: Settings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        client_factory: Callable[[], redis.asyncio.Redis | redis.asyncio.RedisCluster]
        | None = None,
    ) -> None:
        """``client``: a redis.asyncio client, or valkey-glide's (storage/glide.py).
        ``client_factory`` makes a redis.asyncio client like ``client``: given one, the
        manager works from any event loop (one client each); without one, from the loop
        ``client`` is on. On valkey-glide, from one loop at a time."""
        if isinstance(client, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            super().__init__(
                client, settings, clock, isinstance(client, redis.asyncio.RedisCluster)
            )
            self._driver = AsyncDriver(client, client_factory, self.retrying, self.replicas)
            return
        from redsession.storage.glide import GlideDriver

        super().__init__(client, settings, clock, client.cluster)
        self._driver = GlideDriver(client, self.retrying, self.replicas)

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> AsyncSessionManager:
        """Connect to ``url`` (or REDSESSION_REDIS_URL) with Settings.async_driver's client:
        redis-py's serves any event loop, valkey-glide's one loop at a time."""
        s = Settings(**settings)
        if s.async_driver == "valkey-glide":
            from redsession.storage.glide import glide_for

            return cls(glide_for(url, s), s)
        return cls(async_client(url, s), s, client_factory=lambda: async_client(url, s))

    async def close(self) -> None:
        await self._driver.close()

    async def __aenter__(self) -> AsyncSessionManager:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def run(self, op: Op[T]) -> T:
        return await self._driver.run(op)

    # -- sessions ------------------------------------------------------------------------

    async def create_session(
        self,
        user_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        state: Mapping[str, Any] | None = None,
        scope: Mapping[str, str] | None = None,
        reuse_deleted: bool = False,
        op_id: str | None = None,
    ) -> Session:
        return await self.run(
            sessions.create_session(
                self.core, user_id, context, session_id, state, scope, reuse_deleted, op_id
            )
        )

    async def create_or_resume_session(self, user_id: str, session_id: str | None = None) -> str:
        return await self.run(sessions.create_or_resume_session(self.core, user_id, session_id))

    async def resume_session(
        self, session_id: str, user_id: str, *, history: int | None = None
    ) -> Session:
        return await self.run(sessions.resume_session(self.core, session_id, user_id, history))

    async def get_session(
        self,
        session_id: str,
        *,
        history: int = 0,
        user_id: str | None = None,
        follow_merged: bool = True,
        slide: bool = False,
    ) -> Session:
        return await self.run(
            sessions.get_session(self.core, session_id, history, user_id, follow_merged, slide)
        )

    async def delete_session(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        op_id: str | None = None,
        revision: str | None = None,
    ) -> None:
        await self.run(sessions.delete_session(self.core, session_id, user_id, op_id, revision))

    async def update_context(
        self,
        session_id: str,
        patch: Mapping[str, Any],
        *,
        user_id: str | None = None,
        op_id: str | None = None,
    ) -> Session:
        return await self.run(
            sessions.update_context(self.core, session_id, patch, user_id, op_id)
        )

    async def set_preferences(
        self, user_id: str, prefs: Mapping[str, Any], *, op_id: str | None = None
    ) -> dict[str, Any]:
        return await self.run(sessions.set_preferences(self.core, user_id, prefs, op_id))

    async def get_preferences(self, user_id: str, *, touch: bool = False) -> dict[str, Any]:
        return await self.run(sessions.get_preferences(self.core, user_id, touch))

    async def list_active_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        return await self.run(sessions.list_active_sessions(self.core, user_id, limit, cursor))

    async def list_users(
        self, prefix: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> UserPage:
        users, nxt = await self.run(sessions.list_users(self.core, prefix, limit, cursor))
        return UserPage(users=users, next_cursor=nxt)

    async def iter_session_ids(self, user_id: str | None = None) -> AsyncIterator[str]:
        walk = sessions.session_walk(self.core, user_id)
        while not walk.done:
            for sid in await self.run(walk.next_page()):
                yield sid

    async def iter_user_ids(self) -> AsyncIterator[str]:
        walk = sessions.user_walk(self.core)
        while not walk.done:
            for uid in await self.run(walk.next_page()):
                yield uid

    # -- history -------------------------------------------------------------------------

    async def get_history(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
        user_id: str | None = None,
        touch: bool = False,
    ) -> list[Interaction | Item]:
        return await self.run(
            history.get_history(self.core, session_id, limit, before, user_id, touch)
        )

    async def history_since(
        self,
        session_id: str,
        since: datetime,
        *,
        user_id: str | None = None,
        touch: bool = False,
    ) -> list[Interaction | Item]:
        return await self.run(
            history.history_since(self.core, session_id, since, user_id, touch)
        )

    async def log_interaction(
        self,
        session_id: str,
        *,
        user_message: str,
        assistant_response: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        topics: Sequence[str] | None = None,
        user_id: str | None = None,
        op_id: str | None = None,
    ) -> Interaction:
        return await self.run(
            history.log_interaction(
                self.core, session_id, user_message, assistant_response, metadata, topics, user_id,
                op_id,
            )
        )

    async def append_items(
        self,
        session_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        user_id: str | None = None,
        ids: Sequence[str] | None = None,
        topics: Sequence[str] | None = None,
        create_for: str | None = None,
        state: Mapping[str, Any] | None = None,
        scope: Mapping[str, str] | None = None,
        times: Sequence[datetime] | None = None,
        op_id: str | None = None,
        revision: tuple[str | None, str] | None = None,
    ) -> list[Item]:
        return await self.run(
            history.append_items(
                self.core, session_id, items, user_id, ids, topics, create_for, state, scope,
                times, op_id, revision,
            )
        )

    async def get_entry(
        self, session_id: str, entry_id: str, *, user_id: str | None = None
    ) -> Interaction | Item | None:
        return await self.run(history.get_entry(self.core, session_id, entry_id, user_id))

    async def get_items(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        user_id: str | None = None,
        touch: bool = True,
    ) -> list[dict[str, Any]]:
        return await self.run(history.get_items(self.core, session_id, limit, user_id, touch))

    async def pop_item(
        self, session_id: str, *, user_id: str | None = None, op_id: str | None = None
    ) -> dict[str, Any] | None:
        return await self.run(history.pop_item(self.core, session_id, user_id, op_id))

    async def replace_history(
        self,
        session_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        user_id: str | None = None,
        op_id: str | None = None,
    ) -> list[Item]:
        return await self.run(
            history.replace_history(self.core, session_id, items, user_id, op_id)
        )

    async def clear_history(
        self, session_id: str, *, user_id: str | None = None, op_id: str | None = None
    ) -> None:
        await self.run(history.clear_history(self.core, session_id, user_id, op_id))

    # -- checkpoints (core/checkpoints.py: a framework's snapshots, in the side keys) ----

    async def put_checkpoint(
        self, session_id: str, ns: str, checkpoint_id: str, payload: bytes,
        blobs: Sequence[tuple[str, str, bytes]] = (), *, create_for: str,
        scope: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        return await self.run(
            checkpoints.put_checkpoint(
                self.core, session_id, ns, checkpoint_id, payload, blobs, create_for, scope
            )
        )

    async def put_checkpoint_writes(
        self, session_id: str, ns: str, checkpoint_id: str,
        writes: Sequence[tuple[str, bytes, bool]], *, create_for: str,
        scope: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        return await self.run(
            checkpoints.put_writes(
                self.core, session_id, ns, checkpoint_id, writes, create_for, scope
            )
        )

    async def get_checkpoint(
        self, session_id: str, ns: str, checkpoint_id: str | None = None
    ) -> CheckpointRow | None:
        return await self.run(checkpoints.get_checkpoint(self.core, session_id, ns, checkpoint_id))

    async def list_checkpoints(
        self, session_id: str, ns: str | None = None, *, before: str | None = None,
        resume: bytes | None = None, count: int = 100,
    ) -> tuple[list[CheckpointRow], bytes | None]:  # fmt: skip
        return await self.run(
            checkpoints.list_checkpoints(self.core, session_id, ns, before, resume, count)
        )

    async def get_checkpoint_blobs(
        self, session_id: str, ns: str, names: Sequence[tuple[str, str]]
    ) -> list[bytes | None]:
        return await self.run(checkpoints.get_blobs(self.core, session_id, ns, names))

    async def clear_checkpoints(self, session_id: str) -> bool:
        return await self.run(checkpoints.clear_checkpoints(self.core, session_id))

    async def copy_checkpoints(
        self, source_id: str, target_id: str, *, create_for: str,
        scope: Mapping[str, str] | None = None,
    ) -> int:  # fmt: skip
        return await self.run(
            checkpoints.copy_checkpoints(self.core, source_id, target_id, create_for, scope)
        )

    # -- whole sessions ------------------------------------------------------------------

    async def export_session_data(
        self, session_id: str, *, user_id: str | None = None
    ) -> dict[str, Any]:
        doc = await self.export_session(session_id, user_id=user_id)
        return doc.model_dump(mode="json")

    async def export_session(
        self, session_id: str, *, user_id: str | None = None, follow_merged: bool = True
    ) -> SessionExport:
        return await self.run(transfer.export(self.core, session_id, user_id, follow_merged))

    async def import_session_data(
        self,
        doc: object,
        *,
        overwrite: bool = False,
        expect: tuple[int, int] | None = None,
        op_id: str | None = None,
    ) -> str:
        return await self.run(
            transfer.import_session_data(self.core, doc, overwrite, expect, op_id)
        )

    async def merge_sessions(
        self,
        primary_id: str,
        secondary_id: str,
        *,
        user_id: str | None = None,
        allow_cross_user: bool = False,
        op_id: str | None = None,
    ) -> Session:
        return await self.run(
            transfer.merge_sessions(
                self.core, primary_id, secondary_id, user_id, allow_cross_user, op_id
            )
        )

    # -- the event stream ------------------------------------------------------------------

    async def events(
        self,
        after: str | None = None,
        *,
        kinds: Collection[str] | None = None,
        limit: int = 100,
    ) -> EventPage:
        """Up to ``limit`` events after the id ``after`` (None: from the oldest kept), oldest
        first, only of ``kinds`` if given; pass the page's ``after`` back for the next."""
        return await self.run(events.events(self.core, after, kinds, limit))

    async def wait_for_events(
        self,
        after: str | None = None,
        *,
        kinds: Collection[str] | None = None,
        limit: int = 100,
        block: float = 1.0,
    ) -> EventPage:
        """As events(), but wait up to ``block`` seconds for events when there are none yet
        (the page may come back empty)."""
        return await self.run(events.wait_for_events(self.core, after, kinds, limit, block))

    async def event_cursor(self, consumer: str) -> str | None:
        """The id of the last event ``consumer`` (e.g. a webhook URL) is done with."""
        return await self.run(events.consumer_cursor(self.core, consumer))

    async def ack_event(
        self, consumer: str, event_id: str, *, failed: Mapping[str, str] | None = None
    ) -> bool:
        """``consumer`` is done with ``event_id`` (its cursor moves there, never back);
        ``failed``: it gave up on it, and the event becomes a dead letter with these fields."""
        return await self.run(events.ack_event(self.core, consumer, event_id, failed))

    # -- maintenance ---------------------------------------------------------------------

    async def cleanup(self, *, dry_run: bool = False) -> CleanupReport:
        return await self.run(
            cleanup.cleanup_expired_sessions(self.core, self.settings.data_dir, dry_run=dry_run)
        )

    async def cleanup_expired_sessions(self, *, dry_run: bool = False) -> int:
        return (await self.cleanup(dry_run=dry_run)).sessions

    async def stats(self) -> StoreStats:
        return await self.run(stats.stats(self.core))

    async def ping(self) -> None:
        await self.run(status.ping(self.core))

    async def worker_status(self) -> WorkerStatus:
        return await self.run(status.worker_status(self.core))

    async def overview(self) -> Overview:
        return await self.run(status.overview(self.core))

    async def rollup(self) -> RollupReport:
        return await self.run(rollup.rollup(self.core))

    async def analytics(self, *, days: int = 30) -> Analytics:
        return await self.run(analytics.analytics(self.core, days))

    async def record_job(self, run: JobRun) -> None:
        await self.run(status.record_job(self.core, run))

    async def dump_sessions(
        self, data_dir: Path | None = None, *, batch: int = 500, progress: Progress = None
    ) -> DumpReport:
        op = snapshots.dump_sessions(
            self.core, self._data_dir(data_dir), batch=batch, progress=progress
        )
        return await self.run(op)

    async def restore_sessions(
        self, source: Path | None = None, *, overwrite_older: bool = True,
        progress: Progress = None,
    ) -> RestoreReport:  # fmt: skip
        op = restore.restore_sessions(
            self.core, source, overwrite_older=overwrite_older, progress=progress
        )
        return await self.run(op)

    async def mirror_sql(self, database: Database, *, progress: Progress = None) -> MirrorReport:
        op = mirror.mirror_sessions(
            self.core, Rows(database, self.core.cipher, self.settings), progress=progress
        )
        return await self.run(op)

    async def rotate_keys(self, *, progress: Progress = None) -> RotationReport:
        return await self.run(rotation.rotate_keys(self.core, progress))

    async def repair_indexes(self, *, batch: int = repair.REPAIR_BATCH) -> RepairReport:
        return await self.run(repair.repair_indexes(self.core, batch))

    async def prune_scripts(self, *, dry_run: bool = False) -> PruneReport:
        return await self.run(libraries.prune(dry_run))
