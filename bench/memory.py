"""Redis memory per session against the size of its content as JSON."""

from __future__ import annotations

import statistics
import time

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


def stream(url: str, *, smoke: bool) -> list[Table]:
    """What the event stream costs: bytes per entry, the XADD inside each write script, and
    a log_interaction with events against one without."""
    writes = 500 if smoke else 20_000
    timed = 200 if smoke else 5_000
    with redis.Redis.from_url(url) as client:
        client.flushall()
        per_call: dict[int, float] = {}
        for maxlen in (100_000, 0):  # the default cap, then no events at all
            m = SessionManager(client, Settings(redis_url=url, events_maxlen=maxlen))
            sid = m.create_session("bench-user").session_id
            for _ in range(writes):
                m.log_interaction(sid, user_message="m", assistant_response="r")
            if maxlen:
                stream_bytes = client.memory_usage(m.keys.events, samples=0) or 0
                entries = client.xlen(m.keys.events)
                client.config_resetstat()
            samples = []
            for _ in range(timed):
                t0 = time.perf_counter()
                m.log_interaction(sid, user_message="m", assistant_response="r")
                samples.append(time.perf_counter() - t0)
            per_call[maxlen] = statistics.median(samples) * 1e6
            if maxlen:
                xadd = client.info("commandstats").get("cmdstat_xadd", {})
            client.flushall()
    per_entry = stream_bytes / entries
    t = Table("The event stream — cost per write", ["measure", "value"])
    t.rows += [
        ["bytes per entry (MEMORY USAGE of the stream / XLEN)", f"{per_entry:,.0f}"],
        ["memory at the default cap (100,000 entries)", f"{per_entry * 100_000 / 2**20:,.1f} MiB"],
        ["XADD inside the write script, server time per call",
         f"{float(xadd.get('usec_per_call', 0)):.1f} µs"],
        ["log_interaction round trip, events on (median)", f"{per_call[100_000]:.0f} µs"],
        ["log_interaction round trip, events_maxlen=0 (median)", f"{per_call[0]:.0f} µs"],
    ]  # fmt: skip
    t.notes.append(
        f"{writes:,} log events of one session, then {timed:,} timed calls; entries hold "
        "kind, session id, user id, operation id (16 characters here) and time"
    )
    return [t]


def _used(client: redis.Redis) -> int:
    info = client.info("memory")
    return int(info["used_memory"])
