"""Webhook delivery by the worker's leader, against HTTP receivers the tests start on
127.0.0.1: one that answers, one that fails, one that is slow, one that comes back; a
restart and a failover of the delivering worker (on one server; the first test on a
cluster too). At least once: duplicates are counted and allowed, a lost event never is.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from redsession import SessionManager
from redsession.config import Settings
from redsession.model.models import Event
from redsession.services.webhooks import (
    CONSUMER_PREFIX,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    sign,
    verify,
)
from redsession.services.worker import Worker
from redsession.storage.connection import sync_client
from redsession.storage.keys import Keys
from tests.topology import Cluster, redis_cluster  # noqa: F401  (the session's cluster)

SECRET = "webhook-test-secret"
K = Keys()
LEASE = 1.5


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records what it is sent and answers as ``answer``
    says: (status, seconds to wait first) for the n-th request (1-based)."""

    answer: Callable[[int], tuple[int, float]]
    received: list[tuple[str, bytes, bool]] = field(default_factory=list)  # id, body, signed
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    n = receiver.requests
                status, delay = receiver.answer(n)
                if delay:
                    time.sleep(delay)
                signed = verify(SECRET.encode(), body, self.headers.get(SIGNATURE_HEADER))
                if 200 <= status < 300:
                    with receiver.lock:
                        receiver.received.append((self.headers[EVENT_ID_HEADER], body, signed))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender timed out and hung up

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def ids(self) -> list[str]:
        with self.lock:
            return [i for i, _, _ in self.received]


@pytest.fixture
def receivers() -> Iterator[Callable[[Callable[[int], tuple[int, float]]], Receiver]]:
    started: list[Receiver] = []

    def start(answer: Callable[[int], tuple[int, float]]) -> Receiver:
        r = Receiver(answer).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def _settings(redis_url: str, tmp_path: Path, urls: list[str], **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": tmp_path / "data",
        "worker_lease": timedelta(seconds=LEASE),
        "heartbeat_interval": timedelta(seconds=0.2),
        "dump_interval": timedelta(days=1),
        "cleanup_interval": timedelta(days=1),
        "backup_interval": timedelta(days=1),
        "webhook_urls": urls,
        "webhook_secret": SECRET,
        "webhook_timeout": timedelta(seconds=0.5),
        "webhook_attempts": 4,
        "webhook_backoff": timedelta(seconds=0.05),
    }
    return Settings(**(base | kw))


@pytest.fixture
def workers() -> Iterator[Callable[[Settings], Worker]]:
    started: list[tuple[Worker, threading.Thread, SessionManager]] = []

    def start(settings: Settings) -> Worker:
        manager = SessionManager(sync_client(None, settings), settings)
        worker = Worker(settings, manager, bgsave=False, restore=False)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread, manager))
        return worker

    yield start
    for worker, thread, manager in started:
        worker.request_stop()
        thread.join(10)
        manager.close()


def _wait(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _write_events(m: SessionManager, n: int) -> None:
    sid = m.create_session("alice").session_id
    for i in range(n - 1):
        m.log_interaction(sid, user_message=f"private message {i}")


def _stream_ids(m: SessionManager) -> list[str]:
    return [e.id for e in m.events(limit=10_000).events]


def _ok(status: int = 200, delay: float = 0.0) -> Callable[[int], tuple[int, float]]:
    return lambda n: (status, delay)


def test_signature_signs_the_exact_body() -> None:
    body = b'{"id":"1-0"}'
    header = sign(b"k", body)
    assert header.startswith("sha256=")
    assert len(header) == len("sha256=") + 64
    assert verify(b"k", body, header)
    assert not verify(b"k", body + b" ", header)
    assert not verify(b"other", body, header)
    assert not verify(b"k", body, None)


def test_every_event_is_delivered_once_signed_in_order(
    url: str, tmp_path: Path, receivers: Any, workers: Any
) -> None:
    r = receivers(_ok())
    s = _settings(url, tmp_path, [r.url])
    with SessionManager(sync_client(None, s), s) as m:
        _write_events(m, 30)
        workers(s)
        want = _stream_ids(m)
        _wait("every event", lambda: len(r.ids()) >= len(want))
        assert r.ids() == want  # in order, each once
        bodies = [orjson.loads(body) for _, body, _ in r.received]
        assert bodies == [e.model_dump(mode="json") for e in m.events(limit=10_000).events]
        assert all(signed for _, _, signed in r.received)
        assert not any(b"private message" in body for _, body, _ in r.received)
        _wait("the cursor", lambda: m.event_cursor(CONSUMER_PREFIX + r.url) == want[-1])
        later = m.create_session("bob").session_id  # delivered as it happens
        _wait("a new event", lambda: len(r.ids()) == len(want) + 1)
        assert Event.model_validate_json(r.received[-1][1]).session_id == later
        assert m.stats().webhook_dead_letters == 0


def test_a_receiver_that_always_fails_gets_each_try_and_then_a_dead_letter(
    redis_url: str, tmp_path: Path, receivers: Any, workers: Any
) -> None:
    down = receivers(_ok(503))
    refuses = receivers(_ok(400))  # a refusal is not tried again
    fine = receivers(_ok())
    s = _settings(redis_url, tmp_path, [down.url, refuses.url, fine.url])
    with SessionManager(sync_client(None, s), s) as m:
        _write_events(m, 5)
        want = _stream_ids(m)
        workers(s)
        _wait("the good receiver", lambda: fine.ids() == want)
        _wait("every dead letter", lambda: m.stats().webhook_dead_letters == 2 * len(want))
        assert down.requests == s.webhook_attempts * len(want)
        assert refuses.requests == len(want)
        dead = m.client.xrange(K.event_dead, "-", "+")
        by_consumer = Counter(f[b"consumer"].decode() for _, f in dead)
        assert by_consumer == {CONSUMER_PREFIX + down.url: 5, CONSUMER_PREFIX + refuses.url: 5}
        assert sorted({f[b"event"].decode() for _, f in dead}) == sorted(want)
        assert {f[b"error"] for _, f in dead} == {b"HTTP 503", b"HTTP 400"}
        for url in (down.url, refuses.url):  # a dead letter is done with: the cursor moved
            assert m.event_cursor(CONSUMER_PREFIX + url) == want[-1]


def test_a_receiver_that_comes_back_gets_everything(
    redis_url: str, tmp_path: Path, receivers: Any, workers: Any
) -> None:
    # Fails its first five requests (two events' worth of tries, less one), then answers.
    r = receivers(lambda n: (500, 0.0) if n <= 5 else (200, 0.0))
    s = _settings(redis_url, tmp_path, [r.url], webhook_attempts=6)
    with SessionManager(sync_client(None, s), s) as m:
        _write_events(m, 10)
        want = _stream_ids(m)
        workers(s)
        _wait("every event", lambda: r.ids() == want)
        assert r.requests == len(want) + 5
        assert m.stats().webhook_dead_letters == 0


def test_a_slow_receiver_still_gets_every_event(
    redis_url: str, tmp_path: Path, receivers: Any, workers: Any
) -> None:
    # Slower than the timeout on every third request (the sender gives up on that try,
    # though the receiver may still take it: a duplicate), a little slow otherwise.
    r = receivers(lambda n: (200, 0.8) if n % 3 == 0 else (200, 0.05))
    s = _settings(redis_url, tmp_path, [r.url])
    with SessionManager(sync_client(None, s), s) as m:
        _write_events(m, 12)
        want = _stream_ids(m)
        workers(s)
        _wait("every event", lambda: set(want) <= set(r.ids()))
        time.sleep(1.0)  # let the slow handlers still in flight record theirs
        got = Counter(r.ids())
        assert set(got) == set(want)  # 0 lost
        duplicates = sum(got.values()) - len(want)
        assert duplicates <= r.requests - len(want)
        assert r.requests > len(want)  # the slow tries were tried again
        assert m.stats().webhook_dead_letters == 0


def test_a_restarted_worker_resumes_from_its_cursor_without_loss(
    redis_url: str, tmp_path: Path, receivers: Any, workers: Any
) -> None:
    r = receivers(_ok(200, 0.01))
    s = _settings(redis_url, tmp_path, [r.url])
    with SessionManager(sync_client(None, s), s) as m:
        _write_events(m, 40)
        first = workers(s)
        _wait("some events", lambda: len(r.ids()) >= 10)
        first.request_stop()
        _wait("the first worker to stop", lambda: not first.leading)
        time.sleep(0.2)
        stopped_at = len(r.ids())
        _write_events(m, 20)  # while no worker runs
        assert len(r.ids()) == stopped_at
        workers(s)
        want = _stream_ids(m)
        _wait("every event", lambda: set(want) <= set(r.ids()))
        got = Counter(r.ids())
        assert set(got) == set(want)
        assert sum(got.values()) - len(want) <= 1  # at most the one in flight at the stop
        assert stopped_at < len(want)  # the second worker did deliver the rest


WORKER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from redsession.config import Settings
from redsession.services.worker import run_worker
sys.exit(run_worker(Settings()))
"""


def _spawn_worker(s: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
    env |= {
        "REDSESSION_REDIS_URL": str(s.redis_url),
        "REDSESSION_DATA_DIR": str(s.data_dir),
        "REDSESSION_WORKER_LEASE": str(LEASE),
        "REDSESSION_HEARTBEAT_INTERVAL": "0.2",
        "REDSESSION_DUMP_INTERVAL": "86400",
        "REDSESSION_CLEANUP_INTERVAL": "86400",
        "REDSESSION_BACKUP_INTERVAL": "86400",
        "REDSESSION_WEBHOOK_URLS": ",".join(s.webhook_urls),
        "REDSESSION_WEBHOOK_SECRET": SECRET,
        "REDSESSION_WEBHOOK_TIMEOUT": "0.5",
        "REDSESSION_WEBHOOK_BACKOFF": "0.05",
    }
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=out, stderr=out)


def test_a_failover_of_the_leader_loses_no_event(
    redis_url: str, tmp_path: Path, receivers: Any
) -> None:
    r = receivers(_ok(200, 0.01))
    s = _settings(redis_url, tmp_path, [r.url])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with SessionManager(sync_client(None, s), s) as m:
            _write_events(m, 60)
            procs.append(_spawn_worker(s, tmp_path / "a.log"))
            _wait("some events", lambda: len(r.ids()) >= 10)
            procs.append(_spawn_worker(s, tmp_path / "b.log"))  # on standby
            procs[0].kill()  # kill -9: no release, the lease runs out
            procs[0].wait(10)
            _write_events(m, 20)
            want = _stream_ids(m)
            _wait("every event", lambda: set(want) <= set(r.ids()), timeout=60)
            got = Counter(r.ids())
            assert set(got) == set(want)  # 0 lost
            assert sum(got.values()) - len(want) <= 2  # a duplicate or so is allowed
            assert procs[1].poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_webhooks_need_http_urls_and_a_secret() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(webhook_urls=["http://127.0.0.1:9/h"])
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(webhook_urls=["file:///etc/passwd"], webhook_secret="s")
    with pytest.raises(ValidationError, match="twice"):
        Settings(webhook_urls=["http://a/h", "http://a/h"], webhook_secret="s")
    assert Settings(webhook_urls="http://a/h, https://b/h", webhook_secret="s").webhook_urls == [
        "http://a/h", "https://b/h",
    ]  # fmt: skip


def test_no_urls_no_delivery(redis_url: str, tmp_path: Path, workers: Any) -> None:
    s = _settings(redis_url, tmp_path, [], webhook_secret=None)
    worker = workers(s)
    _wait("the lead", lambda: worker.leading)
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(K.event_consumers) == 0
