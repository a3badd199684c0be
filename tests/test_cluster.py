"""redsession on a real Redis Cluster (3 primaries, 3 replicas): slots, the cross-slot index
step, merge interrupted at every step, and the index repair."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from redsession import SessionManager, SessionMerged, StorageError, StorageUnavailable
from redsession.config import Settings
from redsession.maintenance.repair import RepairReport
from redsession.storage.commands import Batch, Cmd, Eval, Script
from redsession.storage.connection import async_client, sync_client
from redsession.storage.drivers import SyncDriver
from redsession.storage.keys import Keys, expiry_member
from tests.topology import Cluster, async_cluster_manager, cluster_manager

K = Keys()


class Interrupted(StorageUnavailable):
    """Raised by FailingDriver in place of the command it was told to fail."""


class FailingDriver(SyncDriver):
    """Runs commands until the ``fail_at``-th (0-based), then fails it.

    ``after``: the command runs but its reply is lost (a crash after Redis acted);
    otherwise it never reaches Redis (a crash before it).
    """

    def __init__(self, client: Any, fail_at: int = -1, *, after: bool = False) -> None:
        super().__init__(client)
        self.fail_at, self.after, self.seen = fail_at, after, 0

    def _execute(self, cmd: Cmd) -> Any:
        n, self.seen = self.seen, self.seen + 1
        if n == self.fail_at:
            if self.after:
                super()._execute(cmd)
            raise Interrupted(f"interrupted at command {n}")
        return super()._execute(cmd)


class Recorder(SyncDriver):
    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.commands: list[Cmd] = []

    def _execute(self, cmd: Cmd) -> Any:
        self.commands.append(cmd)
        return super()._execute(cmd)


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Cluster:
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def client(cluster: Cluster) -> Iterator[redis.RedisCluster]:
    c = cluster.client()
    yield c
    c.close()


@pytest.fixture
def make(cluster: Cluster) -> Iterator[Callable[..., SessionManager]]:
    """``make(clock=None, **settings)``: managers on the emptied cluster."""
    made: list[SessionManager] = []

    def factory(clock: Callable[[], datetime] | None = None, **kw: Any) -> SessionManager:
        s = Settings(**kw)
        m = SessionManager(sync_client(cluster.url, s), s, **({"clock": clock} if clock else {}))
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


def _index_state(c: redis.RedisCluster) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key in (K.sessions, K.users, K.expiry):
        state[key] = sorted(m.decode() for m in c.zrange(key, 0, -1))
    for uid in ("alice", "bob"):
        state[uid] = sorted(m.decode() for m in c.zrange(K.user_sessions(uid), 0, -1))
    return state


def test_cluster_url_gives_a_cluster_store(cluster: Cluster) -> None:
    m = cluster_manager(cluster)
    try:
        assert isinstance(m.client, redis.RedisCluster)
        assert m.core.store.cluster
        assert m.client.retry.get_retries() == 0
    finally:
        m.close()


def test_a_sessions_keys_share_one_slot_and_sessions_spread(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    m = make()
    sids = [m.create_session("alice").session_id for _ in range(30)]
    m.log_interaction(sids[0], user_message="hi")
    m.delete_session(sids[1])
    for sid in sids:
        assert len({client.keyslot(k) for k in K.session_keys(sid)}) == 1
    assert client.exists(K.log(sids[0])) == 1
    assert client.exists(K.tomb(sids[1])) == 1
    nodes = {client.get_node_from_key(K.session(s)).name for s in sids}
    assert len(nodes) == 3  # 30 random ids on 3 primaries: all used (fails ~1 in 10^5)


def test_scripts_touch_one_slot_and_indexes_are_a_second_step(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    m = make()
    rec = Recorder(m.client)
    m._driver = rec
    sid = m.create_session("alice", context={"a": 1}).session_id
    m.log_interaction(sid, user_message="hi", topics=["t"])
    m.update_context(sid, {"b": 2})
    m.resume_session(sid, "alice")
    other = m.create_session("alice").session_id
    m.merge_sessions(sid, other)
    m.delete_session(sid)
    evals = [c for c in rec.commands if isinstance(c, Eval)]
    assert evals
    for e in evals:
        assert len({client.keyslot(k) for k in e.keys}) == 1, e.script.name
    batches = [c for c in rec.commands if isinstance(c, Batch)]
    index_keys = {c[1] for b in batches for c in b.commands}
    assert {K.sessions, K.users, K.expiry, K.dirty, K.user_sessions("alice")} <= index_keys
    # The index keys live in other slots than the session: they cannot be in its script.
    assert len({client.keyslot(k) for k in index_keys} | {client.keyslot(K.session(sid))}) > 1


def test_index_step_on_the_cluster(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    m = make()
    sid = m.create_session("alice").session_id
    exp = client.hget(K.session(sid), "expires_at")
    assert client.zscore(K.expiry, expiry_member(sid, "alice")) == float(exp)
    assert client.zscore(K.sessions, sid) is not None
    assert client.zscore(K.user_sessions("alice"), sid) is not None
    assert client.zscore(K.users, "alice") is not None
    assert client.zscore(K.dirty, sid) is not None
    m.delete_session(sid)
    assert client.zscore(K.sessions, sid) is None
    assert client.zscore(K.expiry, expiry_member(sid, "alice")) is None
    assert client.zscore(K.user_sessions("alice"), sid) is None


def test_scripts_reload_after_function_flush(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    m = make()
    sid = m.create_session("alice").session_id
    client.function_flush()  # on every primary
    m.log_interaction(sid, user_message="after flush")
    assert m.get_session(sid).total_interactions == 1


def test_prune_scripts_on_every_primary(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    """An old release's library on every primary goes; one that a single primary holds is
    listed for an operator, since FUNCTION DELETE would fail on the others."""
    m = make()
    m.create_session("alice")
    everywhere = Script("probe_everywhere", "return 1")
    one = Script("probe_on_one", "return 2")
    client.function_load(everywhere.library, replace=True)  # on every primary
    first = client.get_primaries()[0]  # type: ignore[no-untyped-call]
    first.redis_connection.function_load(one.library, replace=True)
    report = m.prune_scripts()
    assert everywhere.library_name in report.deleted
    assert report.partial == [one.library_name]
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        names = {lib[1] for lib in node.redis_connection.function_list()}
        assert everywhere.library_name.encode() not in names
    first.redis_connection.function_delete(one.library_name)


def test_lost_index_step_is_repaired(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    m = make()
    kept = m.create_session("alice").session_id
    m._driver = FailingDriver(m.client, fail_at=1)  # the script runs, the index step is lost
    with pytest.raises(Interrupted):
        m.create_session("alice", session_id="orphan")
    m._driver = SyncDriver(m.client)
    assert m.get_session("orphan").user_id == "alice"
    assert [s.session_id for s in m.list_active_sessions("alice").sessions] == [kept]

    report = m.repair_indexes()
    assert report == RepairReport(sessions=2, added=3, removed=0, users_removed=0)  # not users
    assert sorted(s.session_id for s in m.list_active_sessions("alice").sessions) == sorted(
        [kept, "orphan"]
    )
    exp = client.hget(K.session("orphan"), "expires_at")
    assert client.zscore(K.expiry, expiry_member("orphan", "alice")) == float(exp)
    # Idempotent: a second run finds nothing to do.
    assert m.repair_indexes() == RepairReport(sessions=2, added=0, removed=0, users_removed=0)


def test_repair_drops_entries_of_gone_and_reowned_sessions(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    m = make()
    live = m.create_session("alice").session_id
    gone = m.create_session("bob").session_id
    client.delete(*K.session_keys(gone))  # as if the script ran but the unindex step was lost
    client.zadd(K.expiry, {expiry_member(live, "mallory"): 1})  # a stale owner
    client.zadd(K.user_sessions("mallory"), {live: 1})
    client.zadd(K.users, {"mallory": 1})
    client.zrem(K.dirty, gone)

    report = m.repair_indexes()
    assert report.sessions == 1
    assert report.removed == 5  # gone: sessions, expiry, bob's index; live: 2 stale owner entries
    assert report.users_removed == 2  # bob and mallory have no session left
    assert _index_state(client) == {
        K.sessions: [live], K.users: ["alice"], K.expiry: [expiry_member(live, "alice")],
        "alice": [live], "bob": [],
    }  # fmt: skip
    assert client.zscore(K.dirty, gone) is not None  # so the dump deletes its file
    assert client.zcard(K.user_sessions("mallory")) == 0


def test_repair_scans_every_primary_in_pages(
    make: Callable[..., SessionManager], client: redis.RedisCluster
) -> None:
    m = make()
    sids = {m.create_session(f"u{i % 7}").session_id for i in range(120)}
    client.delete(K.sessions, K.users, K.expiry)
    for i in range(7):
        client.delete(K.user_sessions(f"u{i}"))
    report = m.repair_indexes(batch=10)
    assert report.sessions == 120
    assert report.added == 120 * 3 + 7
    assert set(m.iter_session_ids()) == sids


def _merge_inputs(m: SessionManager) -> tuple[dict[str, Any], dict[str, Any]]:
    a = m.create_session("alice", context={"x": 1, "both": "a"}, session_id="prim").session_id
    b = m.create_session("alice", context={"y": 2, "both": "b"}, session_id="sec").session_id
    for i in range(3):
        m.log_interaction(a, user_message=f"a{i}", topics=["ta"])
        m.log_interaction(b, user_message=f"b{i}", topics=["tb", "ta"])
    return m.export_session_data(a), m.export_session_data(b)


def _load(m: SessionManager, docs: tuple[dict[str, Any], dict[str, Any]], c: Cluster) -> None:
    c.flush()
    for d in docs:
        m.import_session_data(d)


def test_merge_interrupted_at_every_step_then_rerun(
    make: Callable[..., SessionManager], cluster: Cluster, client: redis.RedisCluster
) -> None:
    # A clock that ticks while the inputs are built, then stands still, so that every
    # run of the merge computes the same times (and Redis TTLs, from real time, still hold).
    t0 = datetime.now(timezone.utc)
    clock_now = [t0]

    def ticking() -> datetime:
        clock_now[0] += timedelta(milliseconds=1)
        return clock_now[0]

    m = make(clock=ticking)
    docs = _merge_inputs(m)
    m.core.clock = lambda: clock_now[0]

    # The uninterrupted merge, command by command.
    _load(m, docs, cluster)
    rec = Recorder(m.client)
    m._driver = rec
    clock_now[0] = t0 + timedelta(minutes=1)
    expected = m.merge_sessions("prim", "sec")
    steps = len(rec.commands)
    assert steps >= 6  # read both, write the primary + its index step, retire the secondary + its
    m._driver = SyncDriver(m.client)
    want_export = m.export_session_data("prim")
    assert [i["user_message"] for i in want_export["history"]] == [
        "a0", "b0", "a1", "b1", "a2", "b2"
    ]  # fmt: skip
    want_index = _index_state(client)

    cases = [(k, after) for k in range(steps) for after in (False, True)]
    for k, after in cases:
        _load(m, docs, cluster)
        m._driver = FailingDriver(m.client, k, after=after)
        with pytest.raises(Interrupted):
            m.merge_sessions("prim", "sec")
        m._driver = SyncDriver(m.client)
        got = m.merge_sessions("prim", "sec")  # the re-run
        where = f"interrupted at step {k} ({'after' if after else 'before'} it ran)"
        assert got == expected, where
        assert m.export_session_data("prim") == want_export, where
        with pytest.raises(SessionMerged):
            m.log_interaction("sec", user_message="late")
        assert m.get_session("sec").session_id == "prim", where
        # A lost index step leaves drift that the repair (the worker's job) removes.
        m.repair_indexes()
        assert _index_state(client) == want_index, where
        assert m.repair_indexes() == RepairReport(1, 0, 0, 0), where


async def test_async_manager_and_repair_on_the_cluster(cluster: Cluster) -> None:
    m = async_cluster_manager(cluster)
    try:
        assert m.core.store.cluster  # the two-step writes of a cluster, whatever the driver
        sids = [(await m.create_session("alice")).session_id for _ in range(10)]
        for sid in sids:
            await m.log_interaction(sid, user_message="hi")
        a, b = sids[:2]
        merged = await m.merge_sessions(a, b)
        assert merged.total_interactions == 2
        page = await m.list_active_sessions("alice")
        assert len(page.sessions) == 9
        report = await m.repair_indexes()
        assert report == RepairReport(sessions=9, added=0, removed=0, users_removed=0)
    finally:
        await m.close()


async def test_async_client_from_cluster_url(cluster: Cluster) -> None:
    c = async_client(cluster.url, Settings())
    try:
        assert isinstance(c, redis.asyncio.RedisCluster)
        await c.set("k{x}", "v")
        assert await c.get("k{x}") == b"v"
    finally:
        await c.aclose()


async def test_cluster_nodes_pack_commands_in_one_hiredis_call(
    cluster: Cluster, hiredis_calls: list[tuple[Any, ...]]
) -> None:
    with sync_client(cluster.url, Settings()) as c:
        c.set("k{x}", "v")
        assert c.get("k{x}") == b"v"
    a = async_client(cluster.url, Settings())
    try:
        await a.set("k{y}", "w")
        assert await a.get("k{y}") == b"w"
    finally:
        await a.aclose()
    # redis-py's asyncio cluster sends its first command twice (its own packer shows the
    # same): each command in order, then, however often.
    sent = [args for args in hiredis_calls if args[0] in (b"SET", b"GET")]
    expected = [(b"SET", "k{x}", "v"), (b"GET", "k{x}"), (b"SET", "k{y}", "w"), (b"GET", "k{y}")]
    assert list(dict.fromkeys(sent)) == expected, sent


def test_stats_memory_is_the_sum_over_the_primaries(cluster: Cluster) -> None:
    # It used to be one node's INFO: a third of the data set on three primaries.
    m = cluster_manager(cluster)
    for i in range(30):
        m.create_session(f"user{i}")
    before = _primaries_memory(cluster)
    used = m.stats().redis_used_memory
    after = _primaries_memory(cluster)
    m.close()
    assert 0.9 * min(sum(before), sum(after)) <= used <= 1.1 * max(sum(before), sum(after))


async def test_async_stats_memory_is_the_sum_over_the_primaries(cluster: Cluster) -> None:
    m = async_cluster_manager(cluster)
    try:
        used = (await m.stats()).redis_used_memory
    finally:
        await m.close()
    assert used > 1.5 * max(_primaries_memory(cluster))  # more than any one primary's


def _primaries_memory(cluster: Cluster) -> list[int]:
    out = []
    for port in cluster.primaries():
        with redis.Redis(port=port) as node:
            out.append(int(node.info("memory")["used_memory"]))
    return out


@pytest.mark.slow
def test_primary_killed_under_writes(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """kill -9 of a primary: its replica takes over, clients go on, acknowledged writes stay."""
    with Cluster(tmp_path / "failover") as c:
        m = SessionManager(sync_client(c.url, Settings(socket_timeout=1.0, connect_timeout=0.5)))
        sid = m.create_session("alice").session_id
        victim_port = m.client.get_node_from_key(K.session(sid)).port
        victim = next(s for s in c.servers if s.port == victim_port)
        acked: list[int] = []
        refused = 0
        deadline = time.monotonic() + 45
        n = 0
        while len(acked) < 400 and time.monotonic() < deadline:
            n += 1
            if n == 200:
                victim.kill()
            try:
                m.log_interaction(sid, user_message=str(n))
                acked.append(n)
            except StorageError:
                refused += 1
                time.sleep(0.05)
        assert len(acked) == 400, "writes did not resume on the promoted replica"
        new_port = m.client.get_node_from_key(K.session(sid)).port
        assert new_port != victim_port
        present = {int(i.user_message) for i in m.get_history(sid)}
        lost = len(set(acked) - present)
        record_property("cluster_acknowledged_writes_lost", lost)
        print(f"\ncluster failover: {len(acked)} acknowledged, {lost} lost, {refused} refused")
        assert m.get_session(sid).total_interactions == len(present)
        assert lost <= 1  # at most the write in flight when the primary died
        m.close()
