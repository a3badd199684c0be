"""Prometheus metrics, the same for every service (the REST API, the MCP server, the worker).

Operation counts, latencies and errors come from the manager's observer hook (one call per
operation run, named after the operation); the gauges (sessions, users, Redis memory, the
age and result of the worker's last jobs) are read from Redis at each scrape with
``manager.overview()``, which costs O(1) commands whatever the number of sessions.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from redsession.async_manager import AsyncSessionManager
from redsession.errors import RedsessionError
from redsession.manager import SessionManager
from redsession.model.models import Overview, utcnow

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a cached read (~100 µs) to a whole-store dump (tens of seconds).
_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30)


class Metrics:
    """One service's metrics, in a registry of their own (tests build many services)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.operations = Counter(
            "redsession_operations", "Operations run, by operation.", ["operation"], registry=r
        )
        self.errors = Counter(
            "redsession_operation_errors",
            "Operations that raised, by operation and error class.",
            ["operation", "error"],
            registry=r,
        )
        self.latency = Histogram(
            "redsession_operation_seconds", "Time per operation, by operation.", ["operation"],
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.redis_up = Gauge("redsession_redis_up", "1 if Redis answered the scrape.", registry=r)
        self.sessions = Gauge("redsession_sessions", "Live sessions.", registry=r)
        self.users = Gauge("redsession_users", "Users with a live session.", registry=r)
        self.memory = Gauge(
            "redsession_redis_used_memory_bytes", "Redis used_memory (a cluster: summed).",
            registry=r,
        )  # fmt: skip
        self.expiring = Gauge(
            "redsession_sessions_expiring_24h", "Sessions that expire within 24 h.", registry=r
        )
        self.leader = Gauge(
            "redsession_worker_leader_alive", "1 if a worker leader's heartbeat is live.",
            registry=r,
        )  # fmt: skip
        self.job_age = Gauge(
            "redsession_worker_job_age_seconds", "Seconds since the last run of a worker job.",
            ["job"], registry=r,
        )  # fmt: skip
        self.job_ok = Gauge(
            "redsession_worker_job_ok", "1 if the last run of a worker job worked.", ["job"],
            registry=r,
        )  # fmt: skip

    def observe(self, operation: str, seconds: float, error: BaseException | None) -> None:
        """The manager's observer (``manager.observer = metrics.observe``)."""
        self.operations.labels(operation).inc()
        self.latency.labels(operation).observe(seconds)
        if error is not None:
            self.errors.labels(operation, type(error).__name__).inc()

    def watch(self, manager: SessionManager | AsyncSessionManager) -> None:
        manager.observer = self.observe

    def update(self, overview: Overview | None, now: datetime | None = None) -> None:
        """Set the gauges from an overview; None when Redis did not answer."""
        self.redis_up.set(overview is not None)
        if overview is None:
            return
        now = now or utcnow()
        self.sessions.set(overview.sessions)
        self.users.set(overview.users)
        self.memory.set(overview.redis_used_memory)
        self.expiring.set(overview.expiring_24h)
        self.leader.set(overview.worker.leader is not None)
        for name, run in overview.worker.jobs.items():
            self.job_age.labels(name).set((now - run.at).total_seconds())
            self.job_ok.labels(name).set(run.ok)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def scrape(self, manager: SessionManager) -> bytes:
        """Read the gauges with a sync manager and render everything."""
        try:
            self.update(manager.overview())
        except RedsessionError as e:
            log.warning("metrics: Redis did not answer: %s", e)
            self.update(None)
        return self.render()

    async def scrape_async(self, manager: AsyncSessionManager) -> bytes:
        try:
            self.update(await manager.overview())
        except RedsessionError as e:
            log.warning("metrics: Redis did not answer: %s", e)
            self.update(None)
        return self.render()


def serve_sync(
    metrics: Metrics, manager: SessionManager, host: str, port: int
) -> ThreadingHTTPServer:
    """Serve GET /metrics from a daemon thread (the worker has no web server of its own)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.partition("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.scrape(manager)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
