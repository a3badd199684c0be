"""Crash tests: kill -9 of Redis under a write load, of the dumping process, and full restores."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from redsession import SessionManager
from redsession.core import transfer
from redsession.errors import StorageError
from redsession.maintenance.snapshots import sessions_dir
from redsession.services.embedded import RedisServer

ServerFactory = Callable[..., RedisServer]
WRITERS = 2
SESSIONS_PER_WRITER = 5
ACKS_BEFORE_KILL = 400


def _manager(url: str, data_dir: Path) -> SessionManager:
    return SessionManager.from_url(url, data_dir=data_dir)


@dataclass
class Writer:
    """Logs interactions round-robin over its sessions until Redis goes away."""

    manager: SessionManager
    sids: list[str]
    acked: list[tuple[str, str, float]] = field(default_factory=list)  # sid, id, when acked
    in_flight: str | None = None  # the session of the one call without an answer

    def run(self) -> None:
        i = 0
        while True:
            sid = self.sids[i % len(self.sids)]
            self.in_flight = sid
            try:
                item = self.manager.log_interaction(sid, user_message=f"message {i}")
            except StorageError:
                return
            self.acked.append((sid, item.id, time.monotonic()))
            self.in_flight = None
            i += 1


def _load_then_kill(server: RedisServer, data_dir: Path) -> list[Writer]:
    """Run WRITERS threads against ``server``, kill -9 it mid-load, and start it again."""
    setup = _manager(server.url, data_dir)
    writers = [
        Writer(
            _manager(server.url, data_dir),
            [setup.create_session(f"u{w}").session_id for _ in range(SESSIONS_PER_WRITER)],
        )
        for w in range(WRITERS)
    ]
    setup.close()
    threads = [threading.Thread(target=w.run) for w in writers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while sum(len(w.acked) for w in writers) < ACKS_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill()
    for t in threads:
        t.join(30)
    for w in writers:
        w.manager.close()
    assert all(len(w.acked) > 0 for w in writers)
    server.start()
    return writers


def _stored(m: SessionManager, sid: str) -> list[str]:
    history = m.get_history(sid)
    assert m.get_session(sid).total_interactions == len(history)  # invariant 2
    return [i.id for i in history]


@pytest.mark.slow
def test_kill_9_with_appendfsync_always_loses_no_acknowledged_write(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(appendfsync="always")
    writers = _load_then_kill(server, tmp_path)
    with _manager(server.url, tmp_path) as m:
        for w in writers:
            for sid in w.sids:
                acked = [i for s, i, _ in w.acked if s == sid]
                stored = _stored(m, sid)
                # Every acknowledged write, in order; at most the one unanswered call besides.
                assert stored[: len(acked)] == acked
                assert len(stored) - len(acked) <= (1 if w.in_flight == sid else 0)


@pytest.mark.slow
def test_kill_9_with_appendfsync_everysec_loses_at_most_a_suffix(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(appendfsync="everysec")
    writers = _load_then_kill(server, tmp_path)
    lost: list[float] = []
    last_ack = max(when for w in writers for _, _, when in w.acked)
    total = sum(len(w.acked) for w in writers)
    with _manager(server.url, tmp_path) as m:
        for w in writers:
            for sid in w.sids:
                acked = [(i, when) for s, i, when in w.acked if s == sid]
                ids = [i for i, _ in acked]
                stored = _stored(m, sid)
                # What survives is what was acknowledged, in order, up to some point.
                kept = min(len(stored), len(ids))
                assert stored[:kept] == ids[:kept]
                assert len(stored) - kept <= (1 if w.in_flight == sid else 0)
                lost += [when for _, when in acked[kept:]]
    window = last_ack - min(lost) if lost else 0.0
    print(
        f"\neverysec, kill -9 of the server: {len(lost)} of {total} acknowledged writes lost, "
        f"covering the last {window:.3f} s before the kill"
    )


def _files_are_whole_dumps(m: SessionManager, folder: Path) -> int:
    """Assert every *.json under ``folder`` is a complete export; return the temp files seen."""
    temps = 0
    for entry in os.scandir(folder):
        if entry.name.endswith(".json"):
            doc = transfer.parse_export(m.core, Path(entry.path).read_bytes())
            assert f"{doc.session.session_id}.json" == entry.name
        else:
            assert entry.name.startswith(".")
            assert ".json.tmp-" in entry.name
            temps += 1
    return temps


def _dump_forever(url: str, data_dir: Path, sids: list[str]) -> None:
    """The child: mark every session changed, dump them all, again and again."""
    with _manager(url, data_dir) as m:
        while True:
            m.client.zadd(m.keys.dirty, dict.fromkeys(sids, 0))
            m.dump_sessions(batch=50)


@contextlib.contextmanager
def _forked(target: Callable[[], None]) -> Iterator[int]:
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process; the child runs only our code.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns to pytest
        try:
            target()
        finally:
            os._exit(0)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.mark.slow
def test_kill_9_of_the_dumper_never_leaves_a_partial_file(redis_url: str, tmp_path: Path) -> None:
    rng = random.Random()
    data_dir = tmp_path / "data"
    with _manager(redis_url, data_dir) as m:
        sids = []
        for n in range(200):
            sid = m.create_session(f"u{n % 7}").session_id
            for j in range(n % 4):  # files of different sizes
                m.log_interaction(sid, user_message="x" * rng.randrange(10, 20_000) + str(j))
            sids.append(sid)
        m.dump_sessions()  # a first complete set, so every kill lands on a rewrite
        folder = sessions_dir(data_dir)
        rounds_with_temps = 0
        for _ in range(60):
            with _forked(lambda: _dump_forever(redis_url, data_dir, sids)) as pid:
                time.sleep(rng.uniform(0.002, 0.12))
                os.kill(pid, signal.SIGKILL)
            rounds_with_temps += _files_are_whole_dumps(m, folder) > 0
        # Evidence the kills landed mid-write, so the test above tested something.
        assert rounds_with_temps > 0
        print(f"\n{rounds_with_temps} of 60 kills left a temp file behind (never a .json)")
        # No kill ever lost a file either: each rewrite replaced the old one in one step.
        assert {n for n in os.listdir(folder) if n.endswith(".json")} == {f"{s}.json" for s in sids}
        # A dump after all that leaves every file equal to its session's export.
        m.client.zadd(m.keys.dirty, dict.fromkeys(sids, 0))
        assert m.dump_sessions().written == len(sids)
        before = {sid: m.export_session(sid) for sid in sids}
        m.client.flushall()
        report = m.restore_sessions()
        assert report.restored == len(sids)
        assert report.quarantined == 0
        assert {sid: m.export_session(sid) for sid in sids} == before


def test_lost_redis_data_dir_restores_from_dumps(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    data_dir = tmp_path / "data"
    with _manager(server.url, data_dir) as m:
        sids = [m.create_session("u").session_id for _ in range(10)]
        for sid in sids:
            m.log_interaction(sid, user_message="remember me", metadata={"pi": 3.14159})
        m.delete_session(sids[0])  # deleted before the dump: its file never exists
        m.dump_sessions()
        before = {sid: m.export_session(sid) for sid in sids[1:]}
    server.stop()
    shutil.rmtree(server.data_dir)  # Redis' AOF and RDB are gone
    server.start()
    with _manager(server.url, data_dir) as m:
        assert m.client.dbsize() == 0
        report = m.restore_sessions()
        assert (report.restored, report.quarantined) == (9, 0)
        assert {sid: m.export_session(sid) for sid in sids[1:]} == before
        assert sorted(m.iter_session_ids()) == sorted(sids[1:])
