"""The worker: one leader (elected by a Redis lease lock) runs cleanup, dump, backup, the
SQL mirror and the analytics rollup.

Any number of workers may run. The main thread runs the election: standbys try to take the
lock whenever the holder's lease would run out; the leader renews it (and the heartbeat)
well inside the lease. The leader's jobs run on APScheduler, one at a time, on a single
thread, so a dump never races a backup or a cleanup.

Jobs fire once per global period: period k of a job with interval I starts at k*I seconds
after the Unix epoch, plus a random jitter. Periods are thus the same on every host, and a
new leader starts at the next period, never repeating the one its predecessor ran.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import Any

import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redsession.config import Settings
from redsession.errors import ConfigError, RedsessionError, SqlError, StorageUnavailable
from redsession.maintenance.backup import run_backup
from redsession.manager import SessionManager
from redsession.mirror.database import Database
from redsession.model.models import JobRun
from redsession.services.leader import LeaderLock, read_heartbeat
from redsession.services.webhooks import WebhookDelivery
from redsession.storage.connection import sync_client
from redsession.storage.keys import Keys

log = logging.getLogger(__name__)

JOBS = ("cleanup", "dump", "backup", "mirror", "rollup")
# Back-off after a failed lock call: doubles from here up to the renewal interval.
_BACKOFF_START = 0.1
# A standby retries this soon after the holder's lease should have run out.
_TAKEOVER_SLACK = 0.01
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class _LeaseLost(Exception):
    """Raised inside a job (between batches) when this worker is no longer the leader."""


class PeriodTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires once in each period k (from k*interval after the epoch), jitter seconds late.

    Unlike IntervalTrigger, jitter does not accumulate from one run to the next, and every
    host agrees on which period a run belongs to. Jitter is capped at half the interval so
    a late run still falls inside its own period.
    """

    __slots__ = ("interval", "jitter")

    def __init__(self, interval: timedelta, jitter: timedelta) -> None:
        self.interval = interval.total_seconds()
        self.jitter = min(jitter.total_seconds(), self.interval / 2)

    def period(self, at: datetime) -> int:
        return math.floor(at.timestamp() / self.interval)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        # After a run, the period after the run's; at first, the first period starting after now.
        k = self.period(previous_fire_time or now) + 1
        at = k * self.interval + (random.uniform(0, self.jitter) if self.jitter else 0.0)
        return datetime.fromtimestamp(at, tz=timezone.utc)

    def __str__(self) -> str:
        return f"period[{self.interval:g}s, jitter {self.jitter:g}s]"


class Worker:
    """The worker's core: election, jobs and graceful shutdown, without signals or exit codes.

    ``run()`` blocks until ``request_stop()``; it then lets the job in hand finish (renewing
    the lease meanwhile), releases the lock and returns. ``bgsave`` makes the backup job also
    ask Redis for a snapshot (BGSAVE); turn it off for a Redis this worker does not manage.
    ``restore`` loads the dump files when this worker first leads; off when whoever started
    the worker has just restored them (``redsession up``). ``database``: the SQL mirror's
    (default: Settings.sql_url's); a schema newer than this code knows stops the worker
    here (ConfigError), a database that is down only delays the mirror job.
    """

    def __init__(
        self,
        settings: Settings,
        manager: SessionManager,
        *,
        lock_client: redis.Redis | redis.RedisCluster | None = None,
        bgsave: bool = True,
        restore: bool = True,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.keys = Keys(settings.key_prefix)
        self.lock = LeaderLock(
            lock_client or manager.client, self.keys, settings.worker_lease.total_seconds()
        )
        self.bgsave = bgsave
        lease = settings.worker_lease.total_seconds()
        # Renew well inside the lease even if heartbeat_interval is set too long.
        self.renew_interval = min(settings.heartbeat_interval.total_seconds(), lease / 3)
        self.triggers = {
            "cleanup": PeriodTrigger(settings.cleanup_interval, settings.job_jitter),
            "dump": PeriodTrigger(settings.dump_interval, settings.job_jitter),
            "backup": PeriodTrigger(settings.backup_interval, settings.job_jitter),
            "mirror": PeriodTrigger(settings.sql_interval, settings.job_jitter),
            "rollup": PeriodTrigger(settings.rollup_interval, settings.job_jitter),
        }
        self._jobs: dict[str, Callable[[], str]] = {
            "cleanup": self.cleanup,
            "dump": self.dump,
            "backup": self.backup,
            "mirror": self.mirror,
            "rollup": lambda: str(self.manager.rollup()),
        }
        self.jobs = tuple(j for j in JOBS if j != "mirror" or settings.sql_mirror)
        self.database: Database | None = None
        self._schema_checked = False
        if settings.sql_mirror:
            self.database = database or Database.from_settings(settings)
            try:
                self._check_schema()
            except ConfigError:
                if database is None:
                    self.database.close()
                raise
        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        # Webhook threads run beside the jobs (a slow receiver must not hold up a dump),
        # only while this worker's lease holds.
        self.webhooks = WebhookDelivery(settings, manager, lambda: self.lock.held)
        self.leading = False
        self.restored = not restore
        self._restore_queued = False
        self._stop = threading.Event()
        self._job_lock = threading.Lock()  # held while a job runs
        self._failures = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask ``run()`` to finish the job in hand, release the lock and return. Thread-safe."""
        self._stop.set()

    def run(self) -> None:
        """Elect, lead or stand by until ``request_stop()``; then shut down cleanly."""
        log.info("worker %s starting (lease %gs)", self.lock.token, self.lock.lease)
        self.scheduler.start()
        try:
            while not self._stop.is_set():
                self._stop.wait(self.tick())
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        log.info("worker stopping: finishing the job in hand")
        self.scheduler.remove_all_jobs()
        # A POST in flight ends within its timeout; its event is delivered again later.
        self.webhooks.stop(wait=self.settings.webhook_timeout.total_seconds() + 1)
        # Keep the lease while the job in hand finishes, or another leader could start one.
        while not self._job_lock.acquire(timeout=self.tick()):
            pass
        self._job_lock.release()
        self.scheduler.shutdown(wait=True)
        self.leading = False
        try:
            if self.lock.release():
                log.info("released the leader lock")
        except _REDIS_DOWN as e:
            log.warning("could not release the leader lock (it expires by itself): %s", e)

    # -- election --------------------------------------------------------------------------

    def tick(self) -> float:
        """One election step: take, renew or watch the lock. Returns seconds until the next."""
        try:
            if self.leading:
                ok = self.lock.renew()
            elif self.stopping:
                return self.renew_interval  # a worker on its way out does not take the lead
            else:
                ok = self.lock.acquire()
        except _REDIS_DOWN as e:
            return self._redis_down(e)
        self._failures = 0
        if ok and not self.leading:
            self._lead()
        elif not ok and self.leading:
            self._step_down("another worker holds the lock, or our lease ran out")
        if self.leading:
            if not self.restored and not self._restore_queued and not self.stopping:
                self._queue_restore()
            return self.renew_interval
        try:
            ttl = self.lock.holder_ttl()
        except _REDIS_DOWN as e:
            return self._redis_down(e)
        return min(self.renew_interval, ttl + _TAKEOVER_SLACK)

    def _redis_down(self, e: Exception) -> float:
        self._failures += 1
        delay = min(self.renew_interval, _BACKOFF_START * 2.0 ** (self._failures - 1))
        log.warning("Redis unreachable (%s); retrying in %.2fs", e, delay)
        if self.leading:
            if not self.lock.held:
                self._step_down("lease ran out while Redis was unreachable")
            else:
                delay = min(delay, self.lock.remaining())
        return delay

    def _lead(self) -> None:
        self.leading = True
        log.info("leading as %s", self.lock.token)
        if self.stopping:
            return
        if not self.restored:
            self._queue_restore()
        for name in self.jobs:
            self.scheduler.add_job(
                self._run_job, self.triggers[name], args=(name,), id=name, name=name
            )
        self.webhooks.start()

    def _step_down(self, why: str) -> None:
        log.warning("no longer leader: %s; stopping jobs", why)
        self.leading = False
        self.lock.forget()
        self.scheduler.remove_all_jobs()
        self.webhooks.stop()
        self._restore_queued = False

    def _queue_restore(self) -> None:
        self._restore_queued = True
        # A date job fires at once; the single job thread runs it before any periodic job.
        self.scheduler.add_job(
            self._run_restore, "date", id="restore", name="restore", replace_existing=True
        )

    # -- jobs ------------------------------------------------------------------------------

    def _guard(self, _done: int = 0) -> None:
        """Progress callback: stops a long job between batches once the lease is gone."""
        if not self.lock.held:
            raise _LeaseLost

    def _run_job(self, name: str) -> None:
        with self._job_lock:
            if self.stopping or not self.lock.held:
                return  # queued before shutdown or step-down: this run is not ours any more
            at = datetime.now(timezone.utc)
            period = self.triggers[name].period(at)
            start = time.monotonic()
            try:
                outcome = self._jobs[name]()
            except StorageUnavailable as e:
                log.warning("job %s period %d: Redis unavailable, retried next period: %s",
                            name, period, e)  # fmt: skip
                return  # nowhere to record it: the record lives in Redis
            except _LeaseLost:
                log.warning("job %s period %d: stopped, the lease was lost", name, period)
                return
            except RedsessionError as e:  # e.g. a symlink planted in data_dir: said, not raised
                log.error("job %s period %d failed: %s", name, period, e)
                self._record(name, at, start, False, str(e))
                return
            log.info("job %s period %d done in %.3fs: %s",
                     name, period, time.monotonic() - start, outcome)  # fmt: skip
            self._record(name, at, start, True, outcome)

    def _record(self, name: str, at: datetime, start: float, ok: bool, outcome: str) -> None:
        """Keep the run where the dashboard and /metrics read it; a failure to is logged."""
        run = JobRun(job=name, at=at, ok=ok, seconds=time.monotonic() - start, outcome=outcome)
        try:
            self.manager.record_job(run)
        except RedsessionError as e:
            log.warning("could not record the run of job %s: %s", name, e)

    def _run_restore(self) -> None:
        with self._job_lock:
            if self.restored:
                return
            if self.stopping or not self.lock.held:
                self._restore_queued = False
                return
            try:
                report = self.manager.restore_sessions(progress=self._guard)
            except (StorageUnavailable, _LeaseLost) as e:
                log.warning("restore at start did not finish (retried): %r", e)
                self._restore_queued = False
                return
            except RedsessionError as e:
                # A configuration problem (a key, a planted symlink): retrying cannot help, and
                # restore stopped before it touched any dump file.
                log.error("restore at start failed; fix this and restart the worker: %s", e)
                self.restored = True
                return
            self.restored = True
            log.info("restore at start: %s", report)

    def cleanup(self) -> str:
        """Forget expired sessions in the indexes and delete their dump files."""
        report = self.manager.cleanup()
        # Tombstones carry their own TTL: Redis drops them, nothing to purge here.
        return (
            f"{report.sessions} expired sessions forgotten, "
            f"{report.dump_files_removed} dump files removed"
        )

    def dump(self) -> str:
        return str(self.manager.dump_sessions(progress=self._guard))

    def _check_schema(self) -> None:
        """Migrate the mirror's schema once; refuse (ConfigError) one newer than we know.
        A database that is down is said and tried again at the next mirror run."""
        assert self.database is not None
        try:
            self.database.open()
        except SqlError as e:
            log.warning("SQL mirror: %s; the mirror job retries each period", e)
            return
        self._schema_checked = True

    def mirror(self) -> str:
        """Copy the sessions changed since the last run into the SQL mirror."""
        assert self.database is not None
        if not self._schema_checked:
            self.database.open()  # raises while the database is down: said, next period
            self._schema_checked = True
        return str(self.manager.mirror_sql(self.database, progress=self._guard))

    def backup(self) -> str:
        s = self.settings
        report = run_backup(s.data_dir, keep=s.backup_keep, max_age=s.backup_max_age)
        outcome = f"{report.archive.name}: {report.files} files, {len(report.removed)} pruned"
        if self.bgsave:
            outcome += f"; {self._bgsave()}"
        return outcome

    def _bgsave(self) -> str:
        try:
            self.manager.client.bgsave()
        except _REDIS_DOWN as e:
            raise StorageUnavailable(f"Redis is unavailable: {e}") from e
        except ResponseError as e:
            # Already saving, or BGSAVE disabled (managed services): the archive still stands.
            log.warning("BGSAVE refused: %s", e)
            return f"BGSAVE refused: {e}"
        return "BGSAVE started"


def check_worker(settings: Settings) -> bool:
    """True iff a live leader heartbeat exists (for ``redsession worker --check``)."""
    client = sync_client(None, settings)
    try:
        return read_heartbeat(client, Keys(settings.key_prefix)) is not None
    except redis.RedisError as e:  # unreachable, auth, anything: the check says unhealthy
        log.warning("worker check failed: %s", e)
        return False
    finally:
        client.close()


def run_worker(settings: Settings, *, bgsave: bool = True, restore: bool = True) -> int:
    """Run a worker until SIGTERM/SIGINT; returns the exit code (0 after a clean stop).

    The first signal finishes the job in hand and releases the lock; a second exits at once.
    """
    manager = SessionManager(sync_client(None, settings), settings)
    worker = Worker(settings, manager, bgsave=bgsave, restore=restore)
    exporter = None
    if settings.worker_metrics_port:
        from redsession.services.metrics import Metrics, serve_sync

        metrics = Metrics()
        metrics.watch(manager)
        exporter = serve_sync(metrics, manager, settings.api_host, settings.worker_metrics_port)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("%s: finishing the job in hand, then exiting", signal.Signals(signum).name)
        worker.request_stop()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if worker.database is not None:
            worker.database.close()
        if exporter is not None:
            exporter.shutdown()
        manager.close()
    return 0
