from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from redsession import SessionManager
from redsession.config import Settings
from redsession.core import transfer
from redsession.model.models import SessionExport
from redsession.services.leader import read_heartbeat
from redsession.services.worker import PeriodTrigger, Worker, check_worker
from redsession.storage.commands import Batch, Eval
from redsession.storage.connection import sync_client
from redsession.storage.keys import Keys
from tests.conftest import dirty_ids

from .conftest import ServerFactory

KEYS = Keys("redsession")
LEASE = 2.0
UTC = timezone.utc

# -- helpers -------------------------------------------------------------------------------

WORKER_CODE = """
import logging, sys
logging.basicConfig(
    level=logging.INFO, format="%(created).3f %(process)d %(name)s %(levelname)s %(message)s"
)
from redsession.config import Settings
from redsession.services.worker import run_worker
{patch}
sys.exit(run_worker(Settings()))
"""
# A slow disk: each dump file takes at least 5 ms, so a dump of 400 sessions lasts seconds.
SLOW_DUMP = """
import time
from redsession import files
_write = files.write_atomic
def _slow_write(*args, **kwargs):
    time.sleep(0.005)
    return _write(*args, **kwargs)
files.write_atomic = _slow_write
"""
JOB_LINE = re.compile(
    r"^[\d.]+ (\d+) redsession\.services\.worker INFO job (\w+) period (\d+) done"
)
FAST = {
    "WORKER_LEASE": f"PT{LEASE}S",
    "HEARTBEAT_INTERVAL": "PT0.5S",
    "DUMP_INTERVAL": "PT1S",
    "CLEANUP_INTERVAL": "PT1S",
    "BACKUP_INTERVAL": "PT2S",
    "ROLLUP_INTERVAL": "PT1S",
    "SQL_INTERVAL": "PT1S",
    "JOB_JITTER": "PT0.3S",
}
DAY = "P1D"
SLOW_JOBS = {"CLEANUP_INTERVAL": DAY, "BACKUP_INTERVAL": DAY, "ROLLUP_INTERVAL": DAY,
             "SQL_INTERVAL": DAY, "JOB_JITTER": "PT0S"}  # fmt: skip


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def term(self, timeout: float = 30.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``spawn(url, data_dir, patch=, **env)``: a worker subprocess logging to a file.

    ``patch`` is code run before the worker starts; env keys omit the REDSESSION_ prefix.
    Every worker still running at teardown is killed.
    """
    procs: list[Proc] = []

    def start(url: str, data_dir: Path, *, patch: str = "", **env: str) -> Proc:
        full = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
        full |= {"REDSESSION_REDIS_URL": url, "REDSESSION_DATA_DIR": str(data_dir)}
        full |= {f"REDSESSION_{k}": v for k, v in (FAST | env).items()}
        log = tmp_path / f"worker-{len(procs)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-c", WORKER_CODE.format(patch=patch)],
                env=full,
                stdout=out,
                stderr=out,
            )
        proc = Proc(popen, log)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.popen.poll() is None:
            p.popen.kill()
            p.popen.wait()


def job_runs(procs: list[Proc]) -> list[tuple[int, str, int]]:
    """(pid, job, period) of every completed job run, as the workers logged them."""
    runs = []
    for p in procs:
        for line in p.lines():
            if m := JOB_LINE.match(line):
                runs.append((int(m.group(1)), m.group(2), int(m.group(3))))
    return runs


def leaders(procs: list[Proc]) -> list[int]:
    return [p.pid for p in procs if "INFO leading as" in p.text()]


def heartbeat_pid(client: redis.Redis) -> int | None:
    info = read_heartbeat(client, KEYS)
    return info.pid if info else None


def assert_once_per_period(runs: list[tuple[int, str, int]]) -> dict[str, list[int]]:
    periods: dict[str, list[int]] = defaultdict(list)
    for _, job, period in runs:
        periods[job].append(period)
    for job, ps in periods.items():
        assert len(ps) == len(set(ps)), f"{job} ran twice in one period: {sorted(ps)}"
    return periods


def bulk_import(manager: SessionManager, docs: Sequence[object], chunk: int = 2000) -> None:
    """Import export documents fast: run many import ops side by side, pipelined."""
    client = manager.client
    loaded: set[str] = set()
    for i in range(0, len(docs), chunk):
        ops = [transfer.import_session_data(manager.core, d, False) for d in docs[i : i + chunk]]
        pending = [(op, next(op)) for op in ops]
        while pending:
            pipe = client.pipeline(transaction=False)
            for _, cmd in pending:
                if isinstance(cmd, Eval):
                    if cmd.script.function not in loaded:
                        client.function_load(cmd.script.library, replace=True)
                        loaded.add(cmd.script.function)
                    pipe.execute_command(*cmd.fcall())
                else:
                    assert isinstance(cmd, Batch)
                    for c in cmd.commands:
                        pipe.execute_command(*c)
            replies = pipe.execute()
            pos, after = 0, []
            for op, cmd in pending:
                if isinstance(cmd, Eval):
                    reply: Any = replies[pos]
                    pos += 1
                else:
                    assert isinstance(cmd, Batch)
                    reply = replies[pos : pos + len(cmd.commands)]
                    pos += len(cmd.commands)
                with contextlib.suppress(StopIteration):
                    after.append((op, op.send(reply)))
            pending = after


def export_doc(sid: str, uid: str, expires_at: datetime, now: datetime) -> dict[str, Any]:
    stamp = now.isoformat()
    return {
        "format": "redsession.session",
        "version": 2,
        "session": {
            "session_id": sid,
            "user_id": uid,
            "created_at": stamp,
            "last_activity": stamp,
            "total_interactions": 0,
            "context": {"n": sid},
            "topics": [],
            "version": 0,
            "merged_from": [],
        },
        "history": [],
        "expires_at": expires_at.isoformat(),
    }


def many_exports(
    ids: Sequence[str], uid: Callable[[str], str], expires_at: datetime, now: datetime
) -> list[SessionExport]:
    """Export documents as models: copies of one validated template, fast to make."""
    template = SessionExport.model_validate(export_doc("template", "u", expires_at, now))
    return [
        template.model_copy(
            update={"session": template.session.model_copy(
                update={"session_id": s, "user_id": uid(s), "context": {"n": s}}
            )}
        )
        for s in ids
    ]  # fmt: skip


# -- the schedule --------------------------------------------------------------------------


def test_period_trigger_fires_once_per_period_without_drift() -> None:
    trigger = PeriodTrigger(timedelta(seconds=10), timedelta(seconds=3))
    now = datetime(2026, 1, 1, 0, 0, 4, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, now)
    first = trigger.period(now) + 1
    for k in range(first, first + 500):
        assert trigger.period(fire) == k
        # Jitter is added to the period's start, never carried over from the last run.
        assert timedelta(0) <= fire - datetime.fromtimestamp(k * 10, UTC) <= timedelta(seconds=3)
        fire = trigger.get_next_fire_time(fire, fire)


def test_period_trigger_caps_jitter_at_half_the_interval() -> None:
    trigger = PeriodTrigger(timedelta(seconds=2), timedelta(seconds=5))
    assert trigger.jitter == 1.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fires = [trigger.get_next_fire_time(None, now) for _ in range(200)]
    assert {trigger.period(f) for f in fires} == {trigger.period(now) + 1}


# -- one worker, in process ----------------------------------------------------------------


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        worker_lease=timedelta(seconds=LEASE),
        heartbeat_interval=timedelta(seconds=0.2),
        # Long intervals: these tests drive election, not the jobs.
        dump_interval=timedelta(days=1),
        cleanup_interval=timedelta(days=1),
        backup_interval=timedelta(days=1),
        rollup_interval=timedelta(days=1),
    )


@pytest.fixture
def run_in_thread(settings: Settings) -> Iterator[Callable[[], Worker]]:
    started: list[tuple[Worker, threading.Thread, SessionManager]] = []

    def start() -> Worker:
        manager = SessionManager(sync_client(None, settings), settings)
        worker = Worker(settings, manager, bgsave=False)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread, manager))
        return worker

    yield start
    for worker, thread, manager in started:
        worker.request_stop()
        thread.join(10)
        manager.close()


def test_check_worker_follows_the_leader(
    settings: Settings, run_in_thread: Callable[[], Worker], redis_client: redis.Redis
) -> None:
    assert not check_worker(settings)
    worker = run_in_thread()
    wait_for("leadership", lambda: worker.leading)
    assert check_worker(settings)
    assert read_heartbeat(redis_client, KEYS) is not None
    worker.request_stop()
    wait_for("release", lambda: not redis_client.exists(KEYS.worker_leader))
    assert not check_worker(settings)


def test_check_worker_is_false_when_redis_is_unreachable(settings: Settings) -> None:
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    assert not check_worker(dead)


def test_a_leader_that_loses_its_lock_stops_its_jobs(
    run_in_thread: Callable[[], Worker], redis_client: redis.Redis
) -> None:
    worker = run_in_thread()
    wait_for("leadership", lambda: worker.leading)
    assert {j.id for j in worker.scheduler.get_jobs()} >= {"cleanup", "dump", "backup"}
    # Another worker took over (say our lease ran out while we were paused).
    redis_client.set(KEYS.worker_leader, "someone-else", px=60_000)
    wait_for("stepping down", lambda: not worker.leading)
    assert worker.scheduler.get_jobs() == []
    assert not worker.lock.held
    assert redis_client.get(KEYS.worker_leader) == b"someone-else"
    # It takes over again once the other holder is gone.
    redis_client.delete(KEYS.worker_leader)
    wait_for("leadership again", lambda: worker.leading)
    assert {j.id for j in worker.scheduler.get_jobs()} >= {"cleanup", "dump", "backup"}


def test_the_leader_restores_the_dump_once_it_leads(
    settings: Settings, run_in_thread: Callable[[], Worker], redis_client: redis.Redis
) -> None:
    now = datetime.now(UTC)
    doc = export_doc("restored-1", "u1", now + timedelta(days=1), now)
    folder = settings.data_dir / "sessions"
    folder.mkdir(parents=True)
    (folder / "restored-1.json").write_text(json.dumps(doc))
    worker = run_in_thread()
    wait_for("restore", lambda: worker.restored)
    assert redis_client.exists(KEYS.session("restored-1"))


class LosesLeaseAfterFirstBatch(Worker):
    def _guard(self, done: int = 0) -> None:
        self.lock.forget()  # as if the lease ran out while the first batch was written
        super()._guard(done)


def test_a_dump_stops_between_batches_once_the_lease_is_gone(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    manager = SessionManager(sync_client(None, settings), settings)
    ids = _dirty_sessions(manager, 700)
    worker = LosesLeaseAfterFirstBatch(settings, manager, bgsave=False)
    assert worker.lock.acquire()
    worker._run_job("dump")
    assert "done in" not in caplog.text
    assert "stopped, the lease was lost" in caplog.text
    # The batch in hand was finished and marked; the rest waits for the next leader's dump.
    files = sorted(p.name for p in (settings.data_dir / "sessions").iterdir())
    assert files == [f"{s}.json" for s in ids[:500]]
    assert sorted(dirty_ids(manager)) == ids[500:]
    manager.close()


# -- several worker processes --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_each_job_runs_once_per_period(
    n: int, redis_url: str, redis_client: redis.Redis, tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    procs = [spawn(redis_url, tmp_path / "data") for _ in range(n)]
    wait_for("4 dumps", lambda: sum(j == "dump" for _, j, _ in job_runs(procs)) >= 4, 30)
    (leader,) = leaders(procs)
    # Standbys first: stopped, they never take the lead the leader then gives up.
    procs.sort(key=lambda p: p.pid == leader)
    assert [p.term() for p in procs] == [0] * n
    assert leaders(procs) == [leader]
    assert not redis_client.exists(KEYS.worker_leader, KEYS.worker_heartbeat)

    runs = job_runs(procs)
    assert {pid for pid, _, _ in runs} == {leader}
    periods = assert_once_per_period(runs)
    assert set(periods) == {"dump", "cleanup", "backup", "rollup", "mirror"}
    for job, ps in periods.items():
        # One leader throughout: every period from its first run to its last, none missed.
        assert sorted(ps) == list(range(min(ps), max(ps) + 1)), job
    archives = list((tmp_path / "data" / "backups").iterdir())
    assert len(archives) == len(periods["backup"])


@pytest.mark.slow
def test_kill_9_the_leader_another_takes_over_within_the_lease(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    spawn: Callable[..., Proc],
    capsys: pytest.CaptureFixture[str],
) -> None:
    procs = [spawn(redis_url, tmp_path / "data") for _ in range(2)]
    first = wait_for("a leader", lambda: heartbeat_pid(redis_client))
    wait_for("a dump", lambda: job_runs(procs))
    (dead,) = [p for p in procs if p.pid == first]
    (survivor,) = [p for p in procs if p.pid != first]
    killed_at = time.monotonic()
    dead.popen.kill()
    dead.popen.wait()
    wait_for("takeover", lambda: heartbeat_pid(redis_client) == survivor.pid, 10)
    took = time.monotonic() - killed_at
    # The lock outlives its holder by at most a lease; the standby wakes when it runs out.
    # The slack covers this test's polling and process scheduling on a busy machine.
    assert took < LEASE + 1.0, f"takeover took {took:.2f}s"
    with capsys.disabled():
        print(f"\ntakeover after kill -9 of the leader: {took:.2f}s (lease {LEASE:g}s)")
    wait_for(
        "the new leader's dump",
        lambda: any(pid == survivor.pid and j == "dump" for pid, j, _ in job_runs(procs)),
    )
    assert survivor.term() == 0
    assert_once_per_period(job_runs(procs))


@pytest.mark.slow
def test_worker_survives_a_redis_restart(
    server_factory: ServerFactory, tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    server = server_factory()
    proc = spawn(server.url, tmp_path / "data")
    with redis.Redis.from_url(server.url) as client:
        wait_for("a dump", lambda: job_runs([proc]))
        server.stop()
        wait_for("the outage seen", lambda: "Redis unreachable" in proc.text(), 10)
        before = len(job_runs([proc]))
        time.sleep(1.0)  # a real outage: the worker backs off meanwhile, several times
        server.start()
        wait_for("dumps again", lambda: len(job_runs([proc])) >= before + 3)
        assert heartbeat_pid(client) == proc.pid
        assert proc.popen.poll() is None
        assert proc.term() == 0
        assert not client.exists(KEYS.worker_leader)
    assert "Traceback" not in proc.text()


# -- shutdown ------------------------------------------------------------------------------


def _dirty_sessions(manager: SessionManager, count: int) -> list[str]:
    now = datetime.now(UTC)
    ids = [f"d{i:05d}" for i in range(count)]
    bulk_import(manager, [export_doc(s, f"u{i % 50}", now + timedelta(days=1), now)
                          for i, s in enumerate(ids)])  # fmt: skip
    return ids


@pytest.mark.slow
def test_sigterm_during_a_dump_finishes_it_and_releases_the_lock(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    data = tmp_path / "data"
    with SessionManager.from_url(redis_url, data_dir=data) as manager:
        ids = _dirty_sessions(manager, 400)
        proc = spawn(redis_url, data, patch=SLOW_DUMP, **SLOW_JOBS)
        folder = data / "sessions"
        wait_for("the dump under way", lambda: folder.is_dir() and any(folder.glob("*.json")))
        assert proc.term() == 0
        files = {p.name for p in folder.iterdir()}
        # The job in hand ran to its end: every session dumped, none left marked dirty.
        assert files == {f"{s}.json" for s in ids}
        assert dirty_ids(manager) == []
        for name in ("d00000.json", f"{ids[-1]}.json"):
            doc = SessionExport.model_validate_json((folder / name).read_bytes())
            assert f"{doc.session.session_id}.json" == name
    assert not redis_client.exists(KEYS.worker_leader, KEYS.worker_heartbeat)
    assert [job for _, job, _ in job_runs([proc])] == ["dump"]


@pytest.mark.slow
def test_a_second_signal_exits_at_once(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    data = tmp_path / "data"
    with SessionManager.from_url(redis_url, data_dir=data) as manager:
        _dirty_sessions(manager, 400)
    proc = spawn(redis_url, data, patch=SLOW_DUMP, **SLOW_JOBS)
    folder = data / "sessions"
    wait_for("the dump under way", lambda: folder.is_dir() and any(folder.glob("*.json")))
    proc.popen.send_signal(signal.SIGTERM)
    wait_for("the first signal seen", lambda: "finishing the job in hand" in proc.text(), 10)
    proc.popen.send_signal(signal.SIGINT)
    assert proc.popen.wait(10) == 128 + signal.SIGINT
    assert job_runs([proc]) == []  # the dump never finished
    # No release on the way out: the lock waits for its lease to run out.
    assert redis_client.exists(KEYS.worker_leader)


# -- cleanup at scale ----------------------------------------------------------------------


@pytest.mark.slow
def test_cleanup_removes_exactly_the_expired_sessions(
    settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    total, expiring = 100_000, 10_000
    manager = SessionManager(sync_client(None, settings), settings)
    now = datetime.now(UTC)
    ids = [f"c{i:06d}" for i in range(total)]
    live, dead = ids[: total - expiring], ids[total - expiring :]
    uid = {s: f"u{i % 1000}" for i, s in enumerate(ids)}
    bulk_import(manager, many_exports(live, uid.__getitem__, now + timedelta(days=1), now))
    for i in range(0, expiring, 1000):  # each chunk expires 1.5 s after its import
        soon = datetime.now(UTC) + timedelta(seconds=1.5)
        bulk_import(manager, many_exports(dead[i : i + 1000], uid.__getitem__, soon, now))
    # Dump files for some expired sessions and some live ones.
    folder = settings.data_dir / "sessions"
    folder.mkdir(parents=True)
    for s in dead[::10] + live[:1000]:
        (folder / f"{s}.json").write_text("{}")

    def snapshot() -> dict[str, Any]:
        pipe = redis_client.pipeline(transaction=False)
        for key in (KEYS.sessions, KEYS.expiry, KEYS.dirty):
            pipe.zrange(key, 0, -1, withscores=True)
        for u in sorted(set(uid.values())):
            pipe.zrange(KEYS.user_sessions(u), 0, -1, withscores=True)
        for s in live[::10]:  # a sample in full; EXISTS below covers every live session
            pipe.hgetall(KEYS.session(s))
        return dict(zip(["sessions", "expiry", "dirty", "users", "live"],
                        _split(pipe.execute(), 3, 1000)))  # fmt: skip

    wait_for("Redis to expire them", lambda: datetime.now(UTC) > soon + timedelta(seconds=0.2))
    assert redis_client.exists(*[KEYS.session(s) for s in dead[:1000]]) == 0
    before = snapshot()
    worker = Worker(settings, manager, bgsave=False)
    start = time.perf_counter()
    outcome = worker.cleanup()
    took = time.perf_counter() - start
    after = snapshot()
    manager.close()
    with capsys.disabled():
        print(f"\ncleanup of {expiring} expired among {total} sessions: {took:.2f}s ({outcome})")

    gone = {s.encode() for s in dead}
    assert outcome == f"{expiring} expired sessions forgotten, {expiring // 10} dump files removed"
    assert after["live"] == before["live"]  # no live session touched
    assert redis_client.exists(*[KEYS.session(s) for s in live]) == len(live)
    assert after["sessions"] == [(m, sc) for m, sc in before["sessions"] if m not in gone]
    assert len(after["sessions"]) == total - expiring
    assert after["expiry"] == [
        (m, sc) for m, sc in before["expiry"] if m.split(b":")[0] not in gone
    ]
    assert after["users"] == [[(m, sc) for m, sc in z if m not in gone] for z in before["users"]]
    old_dirty = dict(before["dirty"])
    new_dirty = dict(after["dirty"])
    assert {m: sc for m, sc in new_dirty.items() if m not in gone} == {
        m: sc for m, sc in old_dirty.items() if m not in gone
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.json" for s in live[:1000])


def _split(replies: list[Any], indexes: int, users: int) -> list[Any]:
    return [
        *replies[:indexes],
        replies[indexes : indexes + users],
        replies[indexes + users :],
    ]


def test_the_leader_records_each_job_and_serves_metrics(
    redis_url: str, tmp_path: Path, spawn: Callable[..., Proc], manager: SessionManager
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager.create_session("alice")
    proc = spawn(redis_url, tmp_path / "data", WORKER_METRICS_PORT=str(port))
    every = {"dump", "cleanup", "backup", "rollup"}
    status = wait_for(
        "a record of every job",
        lambda: (w := manager.worker_status()).jobs.keys() >= every and w,
        30,
    )
    assert status.leader is not None
    assert status.pid == proc.pid
    assert all(run.ok for run in status.jobs.values())
    assert status.jobs["dump"].outcome.startswith("written=")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'redsession_worker_job_ok{job="dump"} 1.0' in text
    assert 'redsession_worker_job_age_seconds{job="backup"}' in text
    assert 'redsession_operations_total{operation="dump_sessions"}' in text
    assert "redsession_worker_leader_alive 1.0" in text
    assert proc.term() == 0


def test_a_failed_job_is_recorded_with_its_reason(
    settings: Settings, tmp_path: Path, manager: SessionManager
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "sessions").symlink_to(tmp_path)  # the dump refuses to write through it
    s = settings.model_copy(update={"data_dir": data})
    worker = Worker(s, SessionManager(manager.client, s), bgsave=False)
    assert worker.lock.acquire()
    worker._run_job("dump")
    run = manager.worker_status().jobs["dump"]
    assert not run.ok
    assert "symlink" in run.outcome
    worker.lock.release()
