"""redsession on Sentinel-managed replication: 1 master, 1 replica, 3 sentinels on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.asyncio

from redsession import AsyncSessionManager, SessionManager, StorageError
from tests.topology import SentinelSetup

# Five processes and a failover: the whole module is slow (it still runs in CI).
pytestmark = pytest.mark.slow

WRITERS = 8
BEFORE_KILL = 400  # acknowledged writes (all writers) before the master is killed
AFTER_KILL = 100  # each writer goes on until it has this many acknowledged on the new master
DEADLINE = 60.0  # seconds: the load stops then whatever happened


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    # Two replicas: after the master's failover, one still confirms writes (write_replicas).
    with SentinelSetup(Path(tmp_path_factory.mktemp("sentinel")), replicas=2) as setup:
        yield setup


def test_clients_reach_the_master_through_the_sentinels(sentinel: SentinelSetup) -> None:
    assert sentinel.master is not None
    with SessionManager.from_url(sentinel.url) as m:
        sid = m.create_session("alice").session_id
        m.log_interaction(sid, user_message="hi")
        assert m.get_session(sid).total_interactions == 1
        assert m.client.connection_pool.get_master_address()[1] == sentinel.master_port()


async def test_async_client_through_the_sentinels(sentinel: SentinelSetup) -> None:
    m = AsyncSessionManager.from_url(sentinel.url)
    try:
        assert isinstance(m.client, redis.asyncio.Redis)
        sid = (await m.create_session("bob")).session_id
        await m.log_interaction(sid, user_message="hi")
        assert (await m.get_session(sid)).total_interactions == 1
    finally:
        await m.close()


@dataclass
class Writer:
    """Appends numbered interactions to its own session; remembers which were acknowledged."""

    manager: SessionManager
    sid: str
    acked: list[int] = field(default_factory=list)
    failed: int = 0
    acked_after_kill: int = 0
    resumed_at: float = 0.0  # monotonic time of the first acknowledgement after the kill

    def run(self, killed: threading.Event, stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                self.manager.log_interaction(self.sid, user_message=str(n))
            except StorageError:  # unavailable during the failover, or a read-only replica
                self.failed += 1
                time.sleep(0.05)
                continue
            self.acked.append(n)
            if killed.is_set():
                self.resumed_at = self.resumed_at or time.monotonic()
                self.acked_after_kill += 1
                if self.acked_after_kill >= AFTER_KILL:
                    return


def test_kill_master_under_write_load(
    sentinel: SentinelSetup, record_property: pytest.RecordProperty
) -> None:
    assert sentinel.master is not None
    old_port = sentinel.master_port()
    # Retries on (the default), and each write acknowledged once a replica has it.
    m = SessionManager.from_url(
        sentinel.url, socket_timeout=1.0, connect_timeout=0.5, write_replicas=1
    )
    writers = [Writer(m, m.create_session(f"w{i}").session_id) for i in range(WRITERS)]
    killed, stop = threading.Event(), threading.Event()
    threads = [threading.Thread(target=w.run, args=(killed, stop)) for w in writers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DEADLINE
    try:
        while sum(len(w.acked) for w in writers) < BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.005)
        sentinel.master.kill()  # SIGKILL while the writers write
        killed_at = time.monotonic()
        killed.set()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    unavailable_s = max(w.resumed_at for w in writers) - killed_at

    assert sentinel.master_port() != old_port
    for w in writers:
        assert w.acked_after_kill >= AFTER_KILL, "a writer did not get going on the new master"
    lost = 0
    for w in writers:
        s = m.get_session(w.sid)
        history = m.get_history(w.sid)
        assert s.total_interactions == len(history)
        present = [int(i.user_message) for i in history]
        assert present == sorted(set(present))  # no duplicate, no reordering
        lost += len(set(w.acked) - set(present))
    m.close()
    acked = sum(len(w.acked) for w in writers)
    record_property("acknowledged_writes", acked)
    record_property("acknowledged_writes_lost", lost)
    refused = sum(w.failed for w in writers)
    record_property("writes_refused_during_failover", refused)
    print(
        f"\nsentinel failover: {acked} acknowledged, {lost} lost, {refused} refused; "
        f"writes resumed {unavailable_s:.1f}s after the kill"
    )
    # A write is acknowledged once a replica has it, and retried across the failover with
    # its operation id: none lost, none doubled (checked above), none refused.
    assert lost == 0
    assert refused == 0


async def test_async_pool_replaces_connections_after_master_restarts(tmp_path: Path) -> None:
    """As on one server (test_async_manager.py), through Sentinel: every call after a restart
    of the master works. Its own setup: the module's has failed over, and its new master
    would restart as the replica it was started as. The sentinels wait 5 s before they call
    the master down: with the usual 1 s, on a loaded machine, they sometimes failed it over
    during a restart, and the test could not check what it is for."""
    with SentinelSetup(tmp_path, down_after_ms=5000) as setup:
        assert setup.master is not None
        port = setup.master_port()
        m = AsyncSessionManager.from_url(setup.url, socket_timeout=1.0, connect_timeout=0.5)
        try:
            sid = (await m.create_session("carol")).session_id
            await asyncio.gather(*(m.get_session(sid) for _ in range(8)))
            sent: list[str] = []
            for cycle in range(10):
                with redis.Redis(port=port) as c:  # or SIGTERM waits up to 1 s for a replica ack
                    c.config_set("shutdown-timeout", 0)
                setup.master.restart()  # then ~0.1 s: well below down-after (5 s), no failover
                texts = [f"{cycle}.{i}" for i in range(11)]
                for text in texts[:3]:  # sequential: the pool's most recent connection
                    await m.log_interaction(sid, user_message=text)
                await asyncio.gather(*(m.log_interaction(sid, user_message=t) for t in texts[3:]))
                sent += texts
            assert setup.master_port() == port
            assert sorted(x.user_message for x in await m.get_history(sid)) == sorted(sent)
        finally:
            await m.close()
