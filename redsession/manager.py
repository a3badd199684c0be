"""SessionManager: the public API for synchronous code, one thin method per operation.

Every method runs one operation of redsession.core or redsession.maintenance (generators of
Redis commands) on a sync driver; AsyncSessionManager (async_manager.py) runs the same
operations on an asyncio driver, so the two differ only in how the commands are executed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import redis

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
from redsession.core.base import Core
from redsession.errors import ConfigError
from redsession.maintenance import cleanup, repair, restore, rollup, rotation, snapshots
from redsession.maintenance.cleanup import CleanupReport
from redsession.maintenance.repair import RepairReport
from redsession.maintenance.restore import RestoreReport
from redsession.maintenance.rollup import RollupReport
from redsession.maintenance.rotation import RotationReport
from redsession.maintenance.snapshots import DumpReport, Progress
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
from redsession.storage.connection import sync_client
from redsession.storage.drivers import Observer, SyncDriver
from redsession.storage.keys import Keys
from redsession.storage.libraries import PruneReport
from redsession.storage.retries import Replicas, Retrying
from redsession.storage.store import Store

T = TypeVar("T")


class _Observed(Protocol):
    observer: Observer | None


class ManagerBase:
    """What both managers hold: settings, key names, the core, and the client."""

    _driver: _Observed

    def __init__(
        self, client: Any, settings: Settings | None, clock: Callable[[], datetime], cluster: bool
    ) -> None:
        self.settings = settings or Settings()
        self.keys = Keys(self.settings.key_prefix)
        self.core = Core(Store(self.keys, self.settings, cluster=cluster), self.settings, clock)
        self.client = client
        s = self.settings
        self.retrying = Retrying(s.retry_deadline.total_seconds())
        if cluster and s.write_replicas:
            raise ConfigError("write_replicas is for one server or Sentinel, not a cluster")
        self.replicas = Replicas(s.write_replicas, int(s.replica_timeout.total_seconds() * 1000))

    @property
    def observer(self) -> Observer | None:
        """Called as ``observer(operation, seconds, error)`` after every operation run."""
        return self._driver.observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._driver.observer = observer

    def _data_dir(self, data_dir: Path | None) -> Path:
        return self.settings.data_dir if data_dir is None else Path(data_dir)


class SessionManager(ManagerBase):
    """Sessions in Redis, for synchronous code. Thread-safe (redis-py pools connections)."""

    _driver: SyncDriver

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        settings: Settings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(client, settings, clock, isinstance(client, redis.RedisCluster))
        self._driver = SyncDriver(client, self.retrying, self.replicas)

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

    def run(self, op: Op[T]) -> T:
        """Run an operation (a generator of redsession.core or maintenance) on this client."""
        return self._driver.run(op)

    # -- sessions ------------------------------------------------------------------------

    def create_session(
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
        """Create a session for ``user_id``; the id is generated unless ``session_id`` is given.

        ``state`` and ``scope``: a framework's session state and scope (see SessionRecord).
        ``reuse_deleted``: the given id may be one this user deleted (never a merged one, or
        another user's).
        """
        return self.run(
            sessions.create_session(
                self.core, user_id, context, session_id, state, scope, reuse_deleted, op_id
            )
        )

    def create_or_resume_session(self, user_id: str, session_id: str | None = None) -> str:
        """``session_id`` if it is live and belongs to ``user_id``, else a new session's id."""
        return self.run(sessions.create_or_resume_session(self.core, user_id, session_id))

    def resume_session(
        self, session_id: str, user_id: str, *, history: int | None = None
    ) -> Session:
        """The session with its newest interactions; counts as activity (refreshes expiry).

        Raises SessionNotFound, or PermissionDenied when another user owns it.
        A merged session's id resumes its primary.
        """
        return self.run(sessions.resume_session(self.core, session_id, user_id, history))

    def get_session(
        self,
        session_id: str,
        *,
        history: int = 0,
        user_id: str | None = None,
        follow_merged: bool = True,
        slide: bool = False,
    ) -> Session:
        """The session without touching its expiry, with ``history`` newest interactions.

        A merged id reads its primary, unless ``follow_merged`` is False (SessionMerged).
        ``slide``: slide its expiry after all, without counting the read as activity (its
        last_activity, and so its place in the listings, stays).
        """
        return self.run(
            sessions.get_session(self.core, session_id, history, user_id, follow_merged, slide)
        )

    def delete_session(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        op_id: str | None = None,
        revision: str | None = None,
    ) -> None:
        """Delete the session; a tombstone stops late writes from bringing it back.
        ``revision``: only if that is the session's revision (else RevisionConflict)."""
        self.run(sessions.delete_session(self.core, session_id, user_id, op_id, revision))

    def update_context(
        self,
        session_id: str,
        patch: Mapping[str, Any],
        *,
        user_id: str | None = None,
        op_id: str | None = None,
    ) -> Session:
        """Deep-merge ``patch`` into the context (None deletes a key); no patch is lost."""
        return self.run(
            sessions.update_context(self.core, session_id, patch, user_id, op_id)
        )

    def set_preferences(
        self, user_id: str, prefs: Mapping[str, Any], *, op_id: str | None = None
    ) -> dict[str, Any]:
        """Merge ``prefs`` into the user's preferences (None removes a key); returns them all."""
        return self.run(sessions.set_preferences(self.core, user_id, prefs, op_id))

    def get_preferences(self, user_id: str, *, touch: bool = False) -> dict[str, Any]:
        return self.run(sessions.get_preferences(self.core, user_id, touch))

    def list_active_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        """Summaries, newest activity first; pass ``next_cursor`` back for the next page."""
        return self.run(sessions.list_active_sessions(self.core, user_id, limit, cursor))

    def list_users(
        self, prefix: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> UserPage:
        """Users with a live session whose id starts with ``prefix``, in name order."""
        users, nxt = self.run(sessions.list_users(self.core, prefix, limit, cursor))
        return UserPage(users=users, next_cursor=nxt)

    def iter_session_ids(self, user_id: str | None = None) -> Iterator[str]:
        """Every session id (of one user, or all), each once, oldest activity first.

        A session that lives throughout the walk is reached even if it is written meanwhile
        (see IndexWalk); one created during the walk may or may not be.
        """
        walk = sessions.session_walk(self.core, user_id)
        while not walk.done:
            yield from self.run(walk.next_page())

    def iter_user_ids(self) -> Iterator[str]:
        """Every user with a live session, each once, oldest activity first (see IndexWalk)."""
        walk = sessions.user_walk(self.core)
        while not walk.done:
            yield from self.run(walk.next_page())

    # -- history -------------------------------------------------------------------------

    def get_history(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
        user_id: str | None = None,
        touch: bool = False,
    ) -> list[Interaction | Item]:
        """Entries oldest first: the newest ``limit`` of those at positions < ``before``.

        ``touch`` counts the read as activity (slides the expiry), as a resume does.
        """
        return self.run(
            history.get_history(self.core, session_id, limit, before, user_id, touch)
        )

    def history_since(
        self,
        session_id: str,
        since: datetime,
        *,
        user_id: str | None = None,
        touch: bool = False,
    ) -> list[Interaction | Item]:
        """The entries whose time is ``since`` or later, oldest first: O(what it returns)."""
        return self.run(history.history_since(self.core, session_id, since, user_id, touch))

    def log_interaction(
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
        """Append one interaction: one round trip, O(1) in the history length."""
        return self.run(
            history.log_interaction(
                self.core, session_id, user_message, assistant_response, metadata, topics, user_id,
                op_id,
            )
        )

    def append_items(
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
        """Append framework items (JSON objects, stored as given) in one round trip.

        ``ids`` names them (default: generated) and ``times`` dates them (default: now, a
        microsecond apart); ``create_for`` creates the session for that user if it does not
        exist yet (never one that was deleted or merged), with ``scope``; ``state`` keys are
        set in the same step. ``revision`` (expected, new) makes it a compare-and-set on the
        session's revision, checked in the same script: RevisionConflict unless the session's
        revision is ``expected`` (None: unless the session does not exist yet).
        """
        return self.run(
            history.append_items(
                self.core, session_id, items, user_id, ids, topics, create_for, state, scope,
                times, op_id, revision,
            )
        )

    def get_entry(
        self, session_id: str, entry_id: str, *, user_id: str | None = None
    ) -> Interaction | Item | None:
        """The history entry with that id, or None; O(entries newer than it)."""
        return self.run(history.get_entry(self.core, session_id, entry_id, user_id))

    def get_items(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        user_id: str | None = None,
        touch: bool = True,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` items (None: all, 0 or less: none), oldest first, as a
        framework reads them: an interaction is the user's item, then the assistant's."""
        return self.run(history.get_items(self.core, session_id, limit, user_id, touch))

    def pop_item(
        self, session_id: str, *, user_id: str | None = None, op_id: str | None = None
    ) -> dict[str, Any] | None:
        """Remove and return the newest item; None when the history is empty."""
        return self.run(history.pop_item(self.core, session_id, user_id, op_id))

    def replace_history(
        self,
        session_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        user_id: str | None = None,
        op_id: str | None = None,
    ) -> list[Item]:
        """Make ``items`` the whole history in one atomic step (compaction)."""
        return self.run(
            history.replace_history(self.core, session_id, items, user_id, op_id)
        )

    def clear_history(
        self, session_id: str, *, user_id: str | None = None, op_id: str | None = None
    ) -> None:
        """Remove every history entry; the session, its context and topics stay."""
        self.run(history.clear_history(self.core, session_id, user_id, op_id))

    # -- checkpoints (core/checkpoints.py: a framework's snapshots, in the side keys) ----

    def put_checkpoint(
        self, session_id: str, ns: str, checkpoint_id: str, payload: bytes,
        blobs: Sequence[tuple[str, str, bytes]] = (), *, create_for: str,
        scope: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Store a checkpoint of namespace ``ns`` and the (name, version, value) blobs it
        brings, in one script; a missing session is created for ``create_for``."""
        return self.run(
            checkpoints.put_checkpoint(
                self.core, session_id, ns, checkpoint_id, payload, blobs, create_for, scope
            )
        )

    def put_checkpoint_writes(
        self, session_id: str, ns: str, checkpoint_id: str,
        writes: Sequence[tuple[str, bytes, bool]], *, create_for: str,
        scope: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Record (key, value, replace) pending writes against a checkpoint."""
        return self.run(
            checkpoints.put_writes(
                self.core, session_id, ns, checkpoint_id, writes, create_for, scope
            )
        )

    def get_checkpoint(
        self, session_id: str, ns: str, checkpoint_id: str | None = None
    ) -> CheckpointRow | None:
        """A checkpoint with its writes (``checkpoint_id`` None: the newest of ``ns``)."""
        return self.run(checkpoints.get_checkpoint(self.core, session_id, ns, checkpoint_id))

    def list_checkpoints(
        self, session_id: str, ns: str | None = None, *, before: str | None = None,
        resume: bytes | None = None, count: int = 100,
    ) -> tuple[list[CheckpointRow], bytes | None]:  # fmt: skip
        """A page of checkpoints, newest first, of ``ns`` (None: every namespace), with ids
        before ``before``; pass the returned bound as ``resume`` for the next page."""
        return self.run(
            checkpoints.list_checkpoints(self.core, session_id, ns, before, resume, count)
        )

    def get_checkpoint_blobs(
        self, session_id: str, ns: str, names: Sequence[tuple[str, str]]
    ) -> list[bytes | None]:
        return self.run(checkpoints.get_blobs(self.core, session_id, ns, names))

    def clear_checkpoints(self, session_id: str) -> bool:
        """Remove the session's checkpoints, blobs and writes; False if it does not exist."""
        return self.run(checkpoints.clear_checkpoints(self.core, session_id))

    def copy_checkpoints(
        self, source_id: str, target_id: str, *, create_for: str,
        scope: Mapping[str, str] | None = None,
    ) -> int:  # fmt: skip
        """Copy one session's checkpoints into another; returns the fields copied."""
        return self.run(
            checkpoints.copy_checkpoints(self.core, source_id, target_id, create_for, scope)
        )

    # -- whole sessions ------------------------------------------------------------------

    def export_session_data(self, session_id: str, *, user_id: str | None = None) -> dict[str, Any]:
        """The session and its whole history as the versioned export document (JSON-ready)."""
        return self.export_session(session_id, user_id=user_id).model_dump(mode="json")

    def export_session(
        self, session_id: str, *, user_id: str | None = None, follow_merged: bool = True
    ) -> SessionExport:
        """The export document as a model; a merged id exports its primary unless
        ``follow_merged`` is False (SessionMerged)."""
        return self.run(transfer.export(self.core, session_id, user_id, follow_merged))

    def import_session_data(
        self,
        doc: object,
        *,
        overwrite: bool = False,
        expect: tuple[int, int] | None = None,
        op_id: str | None = None,
    ) -> str:
        """Load an export document (dict or JSON); keeps its id and remaining TTL.

        With ``expect`` (version, total_interactions), replace the live session only while
        it is still in that state; ConcurrentModification if it changed, SessionNotFound if
        it is gone.
        """
        return self.run(
            transfer.import_session_data(self.core, doc, overwrite, expect, op_id)
        )

    def merge_sessions(
        self,
        primary_id: str,
        secondary_id: str,
        *,
        user_id: str | None = None,
        allow_cross_user: bool = False,
        op_id: str | None = None,
    ) -> Session:
        """Fold ``secondary_id`` into ``primary_id``; the secondary then redirects to it.

        Idempotent, and safe to re-run after a crash at any step.
        """
        return self.run(
            transfer.merge_sessions(
                self.core, primary_id, secondary_id, user_id, allow_cross_user, op_id
            )
        )

    # -- the event stream ------------------------------------------------------------------

    def events(
        self,
        after: str | None = None,
        *,
        kinds: Collection[str] | None = None,
        limit: int = 100,
    ) -> EventPage:
        """Up to ``limit`` events after the id ``after`` (None: from the oldest kept), oldest
        first, only of ``kinds`` if given; pass the page's ``after`` back for the next."""
        return self.run(events.events(self.core, after, kinds, limit))

    def wait_for_events(
        self,
        after: str | None = None,
        *,
        kinds: Collection[str] | None = None,
        limit: int = 100,
        block: float = 1.0,
    ) -> EventPage:
        """As events(), but wait up to ``block`` seconds for events when there are none yet
        (the page may come back empty)."""
        return self.run(events.wait_for_events(self.core, after, kinds, limit, block))

    def event_cursor(self, consumer: str) -> str | None:
        """The id of the last event ``consumer`` (e.g. a webhook URL) is done with."""
        return self.run(events.consumer_cursor(self.core, consumer))

    def ack_event(
        self, consumer: str, event_id: str, *, failed: Mapping[str, str] | None = None
    ) -> bool:
        """``consumer`` is done with ``event_id`` (its cursor moves there, never back);
        ``failed``: it gave up on it, and the event becomes a dead letter with these fields."""
        return self.run(events.ack_event(self.core, consumer, event_id, failed))

    # -- maintenance ---------------------------------------------------------------------

    def cleanup(self, *, dry_run: bool = False) -> CleanupReport:
        """Take sessions Redis has expired out of the indexes, then delete their dump files."""
        return self.run(
            cleanup.cleanup_expired_sessions(self.core, self.settings.data_dir, dry_run=dry_run)
        )

    def cleanup_expired_sessions(self, *, dry_run: bool = False) -> int:
        """cleanup(), returning how many expired sessions it forgot."""
        return self.cleanup(dry_run=dry_run).sessions

    def stats(self) -> StoreStats:
        return self.run(stats.stats(self.core))

    def ping(self) -> None:
        """Returns once Redis answers (every primary of a cluster); raises StorageUnavailable."""
        self.run(status.ping(self.core))

    def worker_status(self) -> WorkerStatus:
        """The worker leader (from its heartbeat) and the last run of each worker job."""
        return self.run(status.worker_status(self.core))

    def overview(self) -> Overview:
        """Sessions, users, memory, expiring soon and the worker: O(1), for dashboards."""
        return self.run(status.overview(self.core))

    def rollup(self) -> RollupReport:
        """Fold the events since the last run into the per-day analytics (a worker job)."""
        return self.run(rollup.rollup(self.core))

    def analytics(self, *, days: int = 30) -> Analytics:
        """Per-day figures of the last ``days`` days, and the shape of a sample of sessions."""
        return self.run(analytics.analytics(self.core, days))

    def record_job(self, run: JobRun) -> None:
        self.run(status.record_job(self.core, run))

    def dump_sessions(
        self, data_dir: Path | None = None, *, batch: int = 500, progress: Progress = None
    ) -> DumpReport:
        """Write the dump file of every session changed since the last dump (see snapshots)."""
        op = snapshots.dump_sessions(
            self.core, self._data_dir(data_dir), batch=batch, progress=progress
        )
        return self.run(op)

    def restore_sessions(
        self, source: Path | None = None, *, overwrite_older: bool = True,
        progress: Progress = None,
    ) -> RestoreReport:  # fmt: skip
        """Load dump files (default: the data dir's) into Redis (see maintenance.restore)."""
        op = restore.restore_sessions(
            self.core, source, overwrite_older=overwrite_older, progress=progress
        )
        return self.run(op)

    def mirror_sql(self, database: Database, *, progress: Progress = None) -> MirrorReport:
        """Copy the sessions changed since the last run into the SQL mirror (see mirror.run)."""
        op = mirror.mirror_sessions(
            self.core, Rows(database, self.core.cipher, self.settings), progress=progress
        )
        return self.run(op)

    def rotate_keys(self, *, progress: Progress = None) -> RotationReport:
        """Re-encrypt every session and preference under the newest key (safe to re-run)."""
        return self.run(rotation.rotate_keys(self.core, progress))

    def repair_indexes(self, *, batch: int = repair.REPAIR_BATCH) -> RepairReport:
        """Rebuild every index entry from the session hashes and drop stale ones (SCAN)."""
        return self.run(repair.repair_indexes(self.core, batch))

    def prune_scripts(self, *, dry_run: bool = False) -> PruneReport:
        """Delete other releases' script libraries from the server (storage/libraries.py).
        Needs FUNCTION LIST and FUNCTION DELETE, which the app's ACL user has not got."""
        return self.run(libraries.prune(dry_run))
