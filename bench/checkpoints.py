"""LangGraph checkpoints: RedsessionSaver beside LangGraph's InMemorySaver, by thread length.

For each thread length n, one thread gets n checkpoints (each with a small state blob and
one pending write); then ``aput`` (a new checkpoint with its writes, as a graph step makes
it) and ``aget_tuple`` (the newest checkpoint, as every invoke starts) are timed on one
asyncio task. The same is done with InMemorySaver, which does no I/O at all: the ratio is
the price of a networked, durable store, not a comparison of two Redis designs. The
Redis-backed peer, langgraph-checkpoint-redis, needs the RedisJSON and RediSearch modules
(Redis Stack); the bench starts plain Redis or Valkey, so it is reported as not run.

Growth is counted, not timed: the server's own command counts (INFO commandstats, which
include the commands a script runs) and the bytes it received and sent (INFO stats) for one
call, at each length. Equal counts at 10 and 10,000 checkpoints are what O(1) means here.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import redis
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from bench.harness import Budget
from bench.report import Table, fmt_us
from redsession import AsyncSessionManager
from redsession.integrations.langgraph import RedsessionSaver

MESSAGES = [{"role": "user" if i % 2 else "assistant", "content": f"message {i} " * 8}
            for i in range(6)]  # fmt: skip


class Thread:
    """One thread of a saver, grown a checkpoint at a time (each the child of the last)."""

    def __init__(self, saver: BaseCheckpointSaver[Any], tid: str) -> None:
        self.saver, self.tid = saver, tid
        self.parent: str | None = None
        self.version: str | None = None
        self.n = 0

    async def put(self) -> None:
        c = empty_checkpoint()
        self.version = self.saver.get_next_version(self.version, None)
        c["channel_values"] = {"messages": MESSAGES, "step": self.n}
        c["channel_versions"] = {"messages": self.version, "step": self.version}
        conf: dict[str, Any] = {"thread_id": self.tid, "checkpoint_ns": ""}
        if self.parent:
            conf["checkpoint_id"] = self.parent
        cfg = await self.saver.aput(
            {"configurable": conf}, c, {"source": "loop", "step": self.n}, c["channel_versions"]
        )
        await self.saver.aput_writes(cfg, [("step", self.n)], task_id=f"task-{self.n}")
        self.parent = cfg["configurable"]["checkpoint_id"]
        self.n += 1

    async def get(self) -> None:
        tup = await self.saver.aget_tuple({"configurable": {"thread_id": self.tid}})
        assert tup is not None
        assert tup.checkpoint["channel_values"]["step"] == self.n - 1

    async def grow_to(self, n: int) -> None:
        while self.n < n:
            await self.put()


def _counted(client: redis.Redis) -> tuple[int, int, int]:
    """(commands, bytes in, bytes out) the server counted since the last CONFIG RESETSTAT."""
    calls = sum(
        v["calls"] for k, v in client.info("commandstats").items() if "resetstat" not in k
    )
    net = client.info("stats")
    return calls, int(net["total_net_input_bytes"]), int(net["total_net_output_bytes"])


async def _count(client: redis.Redis, call: Any) -> tuple[int, int, int]:
    client.config_resetstat()
    base = _counted(client)  # what RESETSTAT and INFO themselves cost
    client.config_resetstat()
    await call()
    got = _counted(client)
    return got[0] - base[0], got[1] - base[1], got[2] - base[2]


async def _p50(fn: Any, calls: int) -> float:
    """The median latency (µs) of ``calls`` awaits of ``fn()``, after a few untimed ones."""
    for _ in range(3):
        await fn()
    lat = []
    for _ in range(calls):
        begin = time.perf_counter_ns()
        await fn()
        lat.append(time.perf_counter_ns() - begin)
    return statistics.median(lat) / 1000


async def _measure(url: str, lengths: list[int], calls: int, rounds: int) -> list[list[str]]:
    rows = []
    client = redis.Redis.from_url(url)
    async with AsyncSessionManager.from_url(url) as manager:
        ours = RedsessionSaver(manager)
        memory = InMemorySaver()
        for n in lengths:
            ot, mt = Thread(ours, f"bench-{n}"), Thread(memory, f"bench-{n}")
            await ot.grow_to(n)
            await mt.grow_to(n)
            await ot.get()  # loads its script, so that the count is that of a call
            counts = {"aput": await _count(client, ot.put)}
            counts["aget_tuple"] = await _count(client, ot.get)
            # aget_tuple first (it leaves the thread as it is), then aput, a fixed number of
            # calls so that the thread grows by `calls` a round, not by whatever fits in time.
            for op in ("aget_tuple", "aput"):
                p50 = {}
                for name, t in (("ours", ot), ("memory", mt)):
                    p50[name] = statistics.median(
                        [await _p50(t.put if op == "aput" else t.get, calls) for _ in range(rounds)]
                    )
                calls, sent, got = counts[op]
                rows.append([
                    op, f"{n:,}", fmt_us(p50["ours"]), fmt_us(p50["memory"]),
                    f"{p50['ours'] / p50['memory']:.1f}", str(calls), f"{sent:,}", f"{got:,}",
                ])  # fmt: skip
    client.close()
    return rows


def checkpoints(url: str, *, smoke: bool, budget: Budget) -> list[Table]:
    lengths = [10, 100] if smoke else [10, 100, 1_000, 10_000]
    calls, rounds = (20, 1) if smoke else (200, min(budget.rounds, 3))
    rows = asyncio.run(_measure(url, lengths, calls, rounds))
    table = Table(
        "LangGraph checkpoints: RedsessionSaver vs InMemorySaver (one asyncio task, p50)",
        [
            "op", "checkpoints in thread", "ours µs", "in-memory µs", "ours / in-memory",
            "Redis commands", "bytes to Redis", "bytes from Redis",
        ],
        rows,
    )
    table.notes += [
        f"Medians of {rounds} round(s) of {calls} calls each; the aput rounds add their "
        "checkpoints to the thread (aget_tuple is measured first, on exactly n).",
        "aput is a checkpoint with its blobs plus aput_writes of one write, as a graph "
        "step makes them: two scripts; aget_tuple is one script and one HMGET of the blobs.",
        "Commands and bytes are counted by the server for one call (commands run inside "
        "scripts included); equal across lengths means O(1) in the thread's checkpoints.",
        "InMemorySaver does no I/O; langgraph-checkpoint-redis was not run: it needs the "
        "RedisJSON and RediSearch modules (Redis Stack), and the bench starts plain Redis.",
    ]
    return [table]
