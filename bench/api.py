"""The REST API under load, side by side with the library call it wraps, in the same run.

`redsession api` runs as its own process (one uvicorn worker); the load comes from a pool of
other processes, each calling either the endpoint over HTTP (httpx, keep-alive) or the
SessionManager method directly against the same Redis, in interleaved rounds. Also: what the
analytics cost, which is the rollup's work per event (the write path does nothing for them)
and the event stream the rollup reads (log_interaction with events on and off).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from bench.harness import Budget, Figure, Processes, Run, process_loop, time_sync
from bench.report import Table, fmt_rate, fmt_us
from redsession import SessionManager

SESSIONS = 200
HISTORY = 20
OPS = ("get_session", "log_interaction", "list_sessions", "create_session")
_fns: dict[tuple[str, str], Callable[[int], object]] = {}


def _sid(i: int) -> str:
    return f"bench-{i % SESSIONS:04d}"


def _init(url: str, base: str) -> None:
    """A process of the load pool: one HTTP client and one manager, each op as a function."""
    import httpx

    http = httpx.Client(base_url=base, timeout=30)
    m = SessionManager.from_url(url, retry_deadline=0)

    def ok(r: httpx.Response) -> None:
        if r.status_code >= 300:
            raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")

    _fns.update({
        ("api", "get_session"): lambda i: ok(
            http.get(f"/v1/sessions/{_sid(i)}", params={"limit": HISTORY})),
        ("direct", "get_session"): lambda i: m.get_history(
            m.get_session(_sid(i)).session_id, limit=HISTORY),
        ("api", "log_interaction"): lambda i: ok(http.post(
            f"/v1/sessions/{_sid(i)}/interactions", json={"user_message": f"m{i}"})),
        ("direct", "log_interaction"): lambda i: m.log_interaction(
            _sid(i), user_message=f"m{i}"),
        ("api", "list_sessions"): lambda i: ok(http.get("/v1/sessions", params={"limit": 20})),
        ("direct", "list_sessions"): lambda i: m.list_active_sessions(limit=20),
        ("api", "create_session"): lambda i: ok(
            http.post("/v1/sessions", json={"user_id": f"u{i % 50}"})),
        ("direct", "create_session"): lambda i: m.create_session(f"u{i % 50}"),
    })  # fmt: skip


def _task(way: str, op: str, k: int, start_at: float, duration: float, warmup: float) -> Run:
    return process_loop(_fns[(way, op)], k, start_at, duration, warmup)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _api_server(url: str) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
    env["REDSESSION_REDIS_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, "-m", "redsession", "api", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


def _load(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushall()
    with SessionManager.from_url(url) as m:
        for i in range(SESSIONS):
            m.create_session(f"u{i % 50}", session_id=_sid(i))
            for n in range(HISTORY):
                m.log_interaction(_sid(i), user_message=f"hello {n}", assistant_response="hi")


def api(url: str, *, budget: Budget) -> list[Table]:
    _load(url)
    figures: dict[tuple[str, str], Figure] = {}
    with _api_server(url) as base:
        pool = Processes(budget.processes, _init, (url, base))
        try:
            for _ in range(budget.rounds):
                for op in OPS:
                    for way in ("api", "direct"):
                        run = pool.run(_task, way, op, duration=budget.duration,
                                       warmup=budget.warmup)  # fmt: skip
                        figures.setdefault((way, op), Figure("processes", op, way)).add(run)
        finally:
            pool.close()
    t = Table(
        f"REST API under load — {budget.processes} client processes, one API process",
        ["operation", "path", "ops/s", "p50 µs", "p99 µs", "API / direct p50"],
    )
    for op in OPS:
        direct = figures[("direct", op)]
        for way, label in (("api", "HTTP endpoint"), ("direct", "SessionManager call")):
            f = figures[(way, op)]
            ratio = f"{f.p50 / direct.p50:.1f}x" if way == "api" and direct.p50 else "1.0x"
            t.rows.append([op, label, fmt_rate(f.rate), fmt_us(f.p50), fmt_us(f.p99), ratio])
    t.notes.append(
        "each client process runs one request at a time; the API is one uvicorn process on "
        "one event loop, so its rate is bounded by one core where the direct calls use the "
        "clients' own processes"
    )
    return [t, *analytics_cost(url, smoke=budget.rounds == 1)]


def analytics_cost(url: str, *, smoke: bool) -> list[Table]:
    """What the analytics cost: the write path with and without the events the rollup reads,
    and the rollup's time per event folded."""
    duration = 0.05 if smoke else 1.0
    rows = []
    for label, maxlen in (("events on (default)", 100_000), ("events off", 0)):
        with redis.Redis.from_url(url) as client:
            client.flushall()
        with SessionManager.from_url(url, events_maxlen=maxlen) as m:
            m.create_session("u", session_id="s")
            run = time_sync(lambda i, m=m: m.log_interaction("s", user_message=f"m{i}"),
                            duration, duration / 5)  # fmt: skip
        f = Figure("sync", "log_interaction", label)
        f.add(run)
        rows.append(["log_interaction", label, fmt_rate(f.rate), fmt_us(f.p50), fmt_us(f.p99)])
    with redis.Redis.from_url(url) as client:
        client.flushall()
    events = 200 if smoke else 20_000
    with SessionManager.from_url(url) as m:
        for n in range(events // 10):
            sid = m.create_session(f"u{n % 100}").session_id
            for k in range(9):
                m.log_interaction(sid, user_message=f"m{k}")
        start = time.perf_counter()
        report = m.rollup()
        spent = time.perf_counter() - start
    t = Table("Analytics — what they cost", ["measure", "setting", "ops/s", "p50 µs", "p99 µs"])
    t.rows += rows
    t.rows.append([f"rollup of {report.events:,} events", "one worker job",
                   fmt_rate(report.events / spent), fmt_us(spent / report.events * 1e6), "—"])
    t.notes.append(
        "the analytics add nothing to log_interaction: the rollup reads the event stream the "
        "scripts write anyway (its cost is the 'events on' row against 'events off'); the "
        "rollup's row is µs of worker time per event"
    )
    return [t]
