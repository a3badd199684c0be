"""The operations benchmark: every (setup, operation, impl), interleaved over rounds."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import redis

from bench import data
from bench.harness import Budget, Figure, Processes, Run, process_loop, time_async, time_sync
from bench.ops import (
    OPS,
    Dataset,
    Impl,
    Raw,
    RawPlain,
    Redsession,
    RedsessionGlide,
    RedsessionNoHiredis,
    SyncFn,
)
from bench.peers import peers
from redsession import SessionManager
from redsession.config import Settings

log = logging.getLogger(__name__)
SETUPS = ("sync", "asyncio", "processes")
SESSIONS_PER_USER = 5


def impl_classes() -> list[type[Impl]]:
    return [Redsession, Raw, RawPlain, RedsessionGlide, RedsessionNoHiredis, *peers()]


@dataclass
class OpsResult:
    figures: dict[tuple[str, str, str], Figure] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # impl -> why
    setups: tuple[str, ...] = SETUPS
    order: list[str] = field(default_factory=list)  # impl names, in table order

    def figure(self, setup: str, op: str, impl: str) -> Figure:
        key = (setup, op, impl)
        if key not in self.figures:
            self.figures[key] = Figure(setup, op, impl)
        return self.figures[key]


def build_dataset(url: str, users: int, extra: int) -> Dataset:
    """``users`` users with SESSIONS_PER_USER sessions each, ``extra`` sessions to append to
    and ``extra // 5`` to export, each with 20 interactions, loaded through redsession."""
    uids = data.ids("user", users)
    read = [(f"r{u}s{k}", u) for u in uids for k in range(SESSIONS_PER_USER)]
    logs = [(f"w{i:06d}", uids[i % users]) for i in range(extra)]
    exports = [(f"x{i:06d}", uids[i % users]) for i in range(max(1, extra // 5))]
    client = redis.Redis.from_url(url)
    manager = SessionManager(client, Settings(redis_url=url))
    docs = (data.export_doc(s, u, 20) for s, u in [*read, *logs, *exports])
    data.load(manager, client, docs)
    client.close()
    random.Random(7).shuffle(read)  # so round robin does not walk one user's sessions in order
    return Dataset(url=url, log=logs, read=read, export=exports, users=uids)


# -- worker processes ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(ds: Dataset) -> None:
    _WORKER["ds"] = ds
    _WORKER["fns"] = {}


def _worker_task(
    impl_name: str, op: str, k: int, start_at: float, duration: float, warmup: float
) -> Run:
    fns: dict[str, dict[str, SyncFn]] = _WORKER["fns"]
    if impl_name not in fns:
        cls = next(c for c in impl_classes() if c.name == impl_name)
        fns[impl_name] = cls().sync(_WORKER["ds"])
    return process_loop(fns[impl_name][op], k, start_at, duration, warmup)


# -- the run ---------------------------------------------------------------------------------


def run_ops(
    ds: Dataset, budget: Budget, setups: tuple[str, ...] = SETUPS, ops: tuple[str, ...] = OPS,
    impls: list[type[Impl]] | None = None,
) -> OpsResult:  # fmt: skip
    result = OpsResult(setups=setups)
    ready: list[Impl] = []
    for cls in impls if impls is not None else impl_classes():
        why = cls.available()
        if why:
            result.skipped[cls.name] = why
            continue
        impl = cls()
        impl.prepare(ds)
        ready.append(impl)
        result.order.append(impl.name)
    sync_fns = {impl.name: impl.sync(ds) for impl in ready if SETUPS[0] in impl.setups}
    pool = None
    if SETUPS[2] in setups:
        pool = Processes(budget.processes, _init_worker, (ds,))
    rng = random.Random(11)
    try:
        for rnd in range(budget.rounds):
            for setup in setups:
                for op in ops:
                    order = [i for i in ready if op in i.ops and setup in i.setups]
                    rng.shuffle(order)  # no impl always runs first (or right after a peer)
                    for impl in order:
                        if op == "log_interaction":
                            impl.reset(ds)
                        run = _measure(setup, impl, op, ds, budget, sync_fns, pool)
                        result.figure(setup, op, impl.name).add(run)
                        log.info("round %d %s %s %s: %.0f ops/s", rnd, setup, op, impl.name,
                                 run.rate)  # fmt: skip
    finally:
        if pool is not None:
            pool.close()
    return result


def _measure(
    setup: str, impl: Impl, op: str, ds: Dataset, budget: Budget,
    sync_fns: dict[str, dict[str, SyncFn]], pool: Processes | None,
) -> Run:  # fmt: skip
    if setup == SETUPS[0]:
        return time_sync(sync_fns[impl.name][op], budget.duration, budget.warmup)
    if setup == SETUPS[1]:
        return asyncio.run(_async_run(impl, op, ds, budget))
    assert pool is not None
    return pool.run(_worker_task, impl.name, op, duration=budget.duration, warmup=budget.warmup)


async def _async_run(impl: Impl, op: str, ds: Dataset, budget: Budget) -> Run:
    fns, close = await impl.aio(ds)
    try:
        return await time_async(fns[op], budget.concurrency, budget.duration, budget.warmup)
    finally:
        await close()
