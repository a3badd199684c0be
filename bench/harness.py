"""Timing machinery: a private server, timed loops (sync, asyncio, processes) and statistics."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from redsession.services.embedded import RedisServer


@dataclass(frozen=True)
class Budget:
    """How long and how often each figure is measured."""

    duration: float  # seconds per measurement
    rounds: int  # interleaved repetitions; figures are medians over them
    warmup: float  # seconds run untimed before each measurement
    processes: int = 4
    concurrency: int = 64


FULL = Budget(duration=1.0, rounds=5, warmup=0.2)
SMOKE = Budget(duration=0.05, rounds=1, warmup=0.01, processes=2, concurrency=8)


@dataclass
class Run:
    """One timed run: how many operations completed and each one's latency (ns)."""

    ops: int
    elapsed: float
    latencies: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Figure:
    """The median over rounds of one (setup, operation, implementation)."""

    setup: str
    op: str
    impl: str
    rates: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.rates.append(run.rate)
        lat = sorted(run.latencies)
        self.p50s.append(_percentile(lat, 0.50) / 1000)
        self.p99s.append(_percentile(lat, 0.99) / 1000)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.p50s) if self.p50s else 0.0

    @property
    def p99(self) -> float:
        return statistics.median(self.p99s) if self.p99s else 0.0


def ratio(ours: Figure, base: Figure) -> float:
    """Median of the per-round throughput ratios: each round's pair ran back to back."""
    pairs = [a / b for a, b in zip(ours.rates, base.rates) if b > 0]
    return statistics.median(pairs) if pairs else 0.0


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


# -- timed loops -------------------------------------------------------------------------


def time_sync(fn: Callable[[int], object], duration: float, warmup: float, start: int = 0) -> Run:
    """Call ``fn(i)`` for i = start, start+1, ... for ``duration`` seconds after a warm-up."""
    i = start
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        fn(i)
        i += 1
    lat: list[int] = []
    clock = time.perf_counter_ns
    t0 = clock()
    stop = t0 + int(duration * 1e9)
    now = t0
    while now < stop:
        fn(i)
        after = clock()
        lat.append(after - now)
        now = after
        i += 1
    return Run(len(lat), (now - t0) / 1e9, lat)


async def time_async(
    fn: Callable[[int], Awaitable[object]], concurrency: int, duration: float, warmup: float
) -> Run:
    """``concurrency`` tasks each awaiting ``fn(i)`` in a loop for ``duration`` seconds."""
    counter = iter(range(1 << 62))
    clock = time.perf_counter_ns
    lat: list[int] = []

    async def worker(until: int, record: bool) -> None:
        while (begin := clock()) < until:
            await fn(next(counter))
            if record:
                lat.append(clock() - begin)

    warm = clock() + int(warmup * 1e9)
    await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
    t0 = clock()
    await asyncio.gather(*(worker(t0 + int(duration * 1e9), True) for _ in range(concurrency)))
    return Run(len(lat), (clock() - t0) / 1e9, lat)


class Processes:
    """A pool of worker processes that run the same timed loop together.

    Started once (spawn: no inherited sockets) and reused for every measurement; each task
    sleeps until a common start time so the processes overlap, then loops for the duration.
    """

    def __init__(self, count: int, initializer: Callable[..., None], initargs: tuple[Any, ...]):
        self.count = count
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(count, mp_context=ctx, initializer=initializer,
                                        initargs=initargs)  # fmt: skip

    def run(self, task: Callable[..., Run], *args: Any, duration: float, warmup: float) -> Run:
        start_at = time.time() + 0.3
        futures = [
            self.pool.submit(task, *args, k, start_at, duration, warmup) for k in range(self.count)
        ]
        runs = [f.result() for f in futures]
        lat = [x for r in runs for x in r.latencies]
        # Throughput is the sum of the processes' rates over the window they shared.
        return Run(sum(r.ops for r in runs), duration, lat) if runs else Run(0, 0.0)

    def close(self) -> None:
        self.pool.shutdown()


def process_loop(
    fn: Callable[[int], object], k: int, start_at: float, duration: float, warmup: float
) -> Run:
    """The body of one process's share of a Processes.run task."""
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    run = time_sync(fn, duration, warmup, start=k * 1_000_003)
    # Report ops per the nominal window so that the sum of processes is the aggregate rate.
    return Run(run.ops, duration, run.latencies) if run.elapsed else run


# -- the server and the machine ----------------------------------------------------------


@contextlib.contextmanager
def server() -> Iterator[RedisServer]:
    """A fresh server in a temporary directory, with the production fsync policy."""
    with tempfile.TemporaryDirectory(prefix="redsession-bench-") as tmp:
        srv = RedisServer(Path(tmp) / "redis", appendfsync="everysec")
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def machine() -> dict[str, str]:
    """What the figures were measured on: CPU, cores, memory, and the software versions."""
    import hiredis
    import orjson
    import pydantic
    import redis

    from redsession.services.embedded import find_server_binary

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    binary = find_server_binary(None)
    try:
        version = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        version = f"unknown ({e})"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "load average at start": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis-py": redis.__version__,
        "hiredis": getattr(hiredis, "__version__", "installed"),
        "orjson": orjson.__version__,
        "pydantic": pydantic.VERSION,
        "server": f"{binary} ({version})",
    }
