"""Operation ids and retries: a write repeated, by a caller or by the driver after a lost
reply, is applied once, on one server and on a cluster; and under faults in the network and
the server, no write is lost or doubled (counted by interaction id).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from redsession import InvalidInput, SessionManager
from redsession.services.embedded import RedisServer
from redsession.storage.scripts import OPS_KEEP
from tests.conftest import ServerFactory

# -- a write repeated with the caller's operation id ----------------------------------------


@pytest.fixture
def m(url: str) -> Iterator[SessionManager]:
    with SessionManager.from_url(url) as manager:
        yield manager


def _events(m: SessionManager, kind: str) -> int:
    entries = m.client.xrange(m.keys.events)
    return sum(1 for _, fields in entries if fields[b"kind"] == kind.encode())


def test_a_log_repeated_with_its_operation_id_is_stored_once(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    first = m.log_interaction(sid, user_message="once", op_id="log-1")
    again = m.log_interaction(sid, user_message="once", op_id="log-1")
    assert again == first  # the same id and time: the entry that was stored
    assert [i.id for i in m.get_history(sid)] == [first.id]
    assert m.get_session(sid).total_interactions == 1
    assert _events(m, "log") == 1
    other = m.log_interaction(sid, user_message="twice", op_id="log-2")
    assert [i.id for i in m.get_history(sid)] == [first.id, other.id]


def test_items_repeated_with_their_operation_id_are_stored_once(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    items = [{"role": "user", "content": "a"}, {"role": "tool", "content": [1, 2.0]}]
    first = m.append_items(sid, items, op_id="items-1")
    again = m.append_items(sid, items, op_id="items-1")
    assert again == first
    assert m.get_items(sid) == items


def test_a_create_repeated_with_its_operation_id_makes_one_session(m: SessionManager) -> None:
    first = m.create_session("alice", context={"a": 1}, op_id="create-1")
    again = m.create_session("alice", context={"a": 1}, op_id="create-1")
    assert again.session_id == first.session_id
    assert again.created_at == first.created_at
    listed = m.list_active_sessions("alice").sessions
    assert [s.session_id for s in listed] == [first.session_id]
    assert _events(m, "create") == 1
    # Another user's operation with the same id is another operation.
    assert m.create_session("bob", op_id="create-1").session_id != first.session_id


def test_context_prefs_delete_merge_and_import_repeated_apply_once(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    for _ in range(2):
        m.update_context(sid, {"step": 1}, op_id="ctx-1")
    assert m.get_session(sid).context == {"step": 1}
    assert _events(m, "context") == 1
    for _ in range(2):
        m.set_preferences("alice", {"lang": "fr"}, op_id="prefs-1")
    assert m.get_preferences("alice") == {"lang": "fr"}

    secondary = m.create_session("alice").session_id
    m.log_interaction(secondary, user_message="from the secondary")
    merged = m.merge_sessions(sid, secondary, op_id="merge-1")
    again = m.merge_sessions(sid, secondary, op_id="merge-1")  # not SessionMerged
    assert again.session_id == merged.session_id == sid
    assert m.get_session(sid).total_interactions == 1
    assert _events(m, "merge") == 1

    doc = m.export_session_data(sid)
    m.delete_session(sid, op_id="delete-1")
    m.delete_session(sid, op_id="delete-1")  # the first reply again, not "was deleted"
    assert _events(m, "delete") == 1
    # The ops hash lives as long as the tombstone (set in the same script).
    assert m.client.pexpiretime(m.keys.ops(sid)) == m.client.pexpiretime(m.keys.tomb(sid)) > 0

    doc["session"]["session_id"] = copy = "imported-copy"
    for _ in range(2):  # not SessionExists the second time
        assert m.import_session_data(doc, op_id="import-1") == copy
    assert m.get_session(copy).total_interactions == 1


def test_operation_ids_are_checked(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    for bad in ["", "has space", "x" * 129, 7, "ü"]:
        with pytest.raises(InvalidInput):
            m.log_interaction(sid, user_message="x", op_id=bad)  # type: ignore[arg-type]
    assert m.get_session(sid).total_interactions == 0


def _total(m: SessionManager, sid: str) -> int:
    return m.get_session(sid).total_interactions


def test_a_session_remembers_its_last_operations_in_two_generations(m: SessionManager) -> None:
    sid = m.create_session("alice").session_id
    m.log_interaction(sid, user_message="first", op_id="first")
    for n in range(OPS_KEEP - 1):  # the first generation fills up and becomes the old one
        m.log_interaction(sid, user_message=str(n))
    m.log_interaction(sid, user_message="first", op_id="first")  # still remembered
    assert _total(m, sid) == OPS_KEEP
    for n in range(OPS_KEEP):  # a second generation: the first one goes
        m.log_interaction(sid, user_message=str(n))
    m.log_interaction(sid, user_message="first", op_id="first")  # forgotten: applied again
    assert _total(m, sid) == 2 * OPS_KEEP + 1
    ops = m.keys.ops(sid)
    assert 0 < m.client.hlen(ops) < OPS_KEEP
    assert m.client.hlen(m.keys.old_ops(sid)) == OPS_KEEP
    # The newest generation slides with the session; the old one outlives it by op_window
    # at most.
    ttl, ops_ttl = m.client.pttl(m.keys.session(sid)), m.client.pttl(ops)
    assert abs(ttl - ops_ttl) < 1000
    assert 0 < m.client.pttl(m.keys.old_ops(sid)) <= m.settings.op_window.total_seconds() * 1000


def test_an_old_generation_of_operations_is_forgotten_after_the_window(url: str) -> None:
    settings = {"op_window": timedelta(seconds=1), "retry_deadline": timedelta(seconds=0.5)}
    with SessionManager.from_url(url, **settings) as m:
        sid = m.create_session("alice").session_id
        m.log_interaction(sid, user_message="x", op_id="late")
        for n in range(OPS_KEEP - 1):
            m.log_interaction(sid, user_message=str(n))
        m.log_interaction(sid, user_message="x", op_id="late")  # in the old generation
        assert _total(m, sid) == OPS_KEEP
        deadline = time.monotonic() + 10
        while m.client.exists(m.keys.old_ops(sid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        m.log_interaction(sid, user_message="x", op_id="late")  # forgotten: applied again
        assert _total(m, sid) == OPS_KEEP + 1


# -- faults: a proxy that loses replies, CLIENT KILL, kill -9 --------------------------------


class LossyProxy:
    """A TCP proxy on 127.0.0.1 in front of ``port``. Each reply from the server is lost
    (both sockets closed before it is forwarded) with probability ``drop``, and each request
    is cut before it reaches the server with probability ``cut``: the first after the server
    applied the command, the second before. Bounded: it serves until closed."""

    def __init__(self, port: int, drop: float, cut: float, seed: int) -> None:
        self.target = port
        self.drop, self.cut = drop, cut
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.lost_replies = self.cut_requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _chance(self, p: float) -> bool:
        with self.lock:
            return self.rng.random() < p

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            server = socket.create_connection(("127.0.0.1", self.target))
            pair = (client, server)
            threading.Thread(target=self._pipe, args=(client, server, pair, False)).start()
            threading.Thread(target=self._pipe, args=(server, client, pair, True)).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, pair: tuple, replies: bool) -> None:
        src.settimeout(0.5)
        try:
            while not self.closed.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if replies and self._chance(self.drop):
                    with self.lock:
                        self.lost_replies += 1
                    break
                if not replies and self._chance(self.cut):
                    with self.lock:
                        self.cut_requests += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def _count(m: SessionManager, sid: str) -> Counter[str]:
    return Counter(i.user_message for i in m.get_history(sid))


WRITES = 300


def test_lost_replies_and_cut_connections_lose_and_double_nothing(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    proxy = LossyProxy(server.port, drop=0.1, cut=0.05, seed=18)
    try:
        with SessionManager.from_url(
            f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=1, retry_deadline=20
        ) as m:
            sid = m.create_session("alice").session_id
            acked = [m.log_interaction(sid, user_message=str(n)).id for n in range(WRITES)]
            ctx = m.update_context(sid, {"done": True})
        assert ctx.context == {"done": True}
    finally:
        proxy.close()
    with SessionManager.from_url(server.url) as direct:
        counts = _count(direct, sid)
        stored = [i.id for i in direct.get_history(sid)]
        assert direct.get_session(sid).total_interactions == WRITES
    print(f"\nproxy: {proxy.lost_replies} replies lost, {proxy.cut_requests} requests cut")
    assert proxy.lost_replies > 10  # the faults happened
    assert proxy.cut_requests > 5
    assert counts == Counter(str(n) for n in range(WRITES))  # 0 lost, 0 doubled
    assert stored == acked  # each call returned the entry that was stored


def test_client_kill_during_a_burst_of_appends_doubles_nothing(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    admin = redis.Redis.from_url(server.url)
    writers, per_writer = 4, 150
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        me = admin.client_id()
        while not stop.is_set():
            for c in admin.client_list():
                if int(c["id"]) != me:
                    with contextlib.suppress(redis.ResponseError):  # gone since the list
                        kills[0] += admin.client_kill_filter(_id=int(c["id"]))
            time.sleep(0.01)

    with SessionManager.from_url(server.url, retry_deadline=20) as m:
        sid = m.create_session("alice").session_id
        errors: list[Exception] = []

        def write(w: int) -> None:
            try:
                for n in range(per_writer):
                    m.log_interaction(sid, user_message=f"{w}-{n}")
            except Exception as e:  # noqa: BLE001 (reported below, in the test's thread)
                errors.append(e)

        k = threading.Thread(target=killer)
        k.start()
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        stop.set()
        k.join(10)
        assert not errors, errors
        counts = _count(m, sid)
    admin.close()
    print(f"\nCLIENT KILL: {kills[0]} connections killed during {writers * per_writer} appends")
    assert kills[0] > 10
    expected = Counter(f"{w}-{n}" for w in range(writers) for n in range(per_writer))
    assert counts == expected


def test_kill_9_and_restart_inside_the_deadline_loses_nothing(
    server_factory: ServerFactory,
) -> None:
    server: RedisServer = server_factory(appendfsync="always")
    with SessionManager.from_url(server.url, socket_timeout=1, retry_deadline=20) as m:
        sid = m.create_session("alice").session_id
        done = threading.Event()
        acked: list[str] = []
        errors: list[Exception] = []

        def write() -> None:
            try:
                for n in range(400):
                    m.log_interaction(sid, user_message=str(n))
                    acked.append(str(n))
            except Exception as e:  # noqa: BLE001 (reported below, in the test's thread)
                errors.append(e)
            finally:
                done.set()

        t = threading.Thread(target=write)
        t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 100 and time.monotonic() < deadline:
            time.sleep(0.001)
        server.kill()  # SIGKILL: only what was fsynced survives
        killed_at = len(acked)
        time.sleep(1.0)
        server.start()
        t.join(60)
        assert done.is_set()
        assert not errors, errors
        counts = _count(m, sid)
    assert 100 <= killed_at < 400  # the kill came in the middle of the writes
    assert counts == Counter(acked) == Counter(str(n) for n in range(400))
