"""Redis memory per session against the size of its content as JSON."""

from __future__ import annotations

import statistics

import orjson
import redis

from bench import data
from bench.peers import BLOB_PREFIX, _blob
from bench.report import Table
from redsession import SessionManager
from redsession.config import Settings

INTERACTIONS = 20


def memory(url: str, *, smoke: bool) -> list[Table]:
    count = 50 if smoke else 2_000
    with redis.Redis.from_url(url) as client:
        client.flushall()
        manager = SessionManager(client, Settings(redis_url=url))
        keys = manager.keys
        docs = [data.export_doc(f"m{i:06d}", f"muser{i:05d}", INTERACTIONS) for i in range(count)]
        json_size = statistics.median(len(orjson.dumps(d)) for d in docs)
        before = _used(client)
        data.load(manager, client, iter(docs))
        after = _used(client)
        sample = [d["session"]["session_id"] for d in docs[: min(count, 200)]]
        usage = statistics.median(
            sum(client.memory_usage(k, samples=0) or 0 for k in (keys.session(s), keys.log(s)))
            for s in sample
        )
        # The same content as one JSON blob per session (the read-modify-write peers).
        pipe = client.pipeline(transaction=False)
        for d in docs:
            s = d["session"]
            pipe.set(BLOB_PREFIX + s["session_id"], _blob(s["session_id"], s["user_id"], 20))
        pipe.execute()
        blob = statistics.median(
            client.memory_usage(BLOB_PREFIX + s, samples=0) or 0 for s in sample
        )
        client.flushall()
    delta = (after - before) / count
    t = Table(
        f"Memory — one session with {INTERACTIONS} interactions",
        ["measure", "bytes per session", "x its JSON"],
    )
    t.rows += [
        ["content as JSON (the export document)", f"{json_size:,.0f}", "1.00"],
        ["redsession: MEMORY USAGE of its hash + log", f"{usage:,.0f}",
         f"{usage / json_size:.2f}"],
        [f"redsession: used_memory delta over {count:,} sessions (with indexes)",
         f"{delta:,.0f}", f"{delta / json_size:.2f}"],
        ["JSON blob peer: MEMORY USAGE of its string", f"{blob:,.0f}", f"{blob / json_size:.2f}"],
    ]  # fmt: skip
    t.notes.append(
        "the used_memory delta includes each session's entries in the per-user, activity, "
        "expiry and dirty indexes, and the per-user sessions index key"
    )
    return [t]


def _used(client: redis.Redis) -> int:
    info = client.info("memory")
    return int(info["used_memory"])
