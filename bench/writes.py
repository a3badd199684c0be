"""What a write's operation id and its event cost the server, and in memory.

The same log_interaction three ways, interleaved round by round on one server: as shipped
(operation id and event), with the event stream off (Settings.events_maxlen=0), and with
neither (the stamps' operation ids blanked, which the scripts read as "not deduplicated": a
bench-only instrument, not a setting). The server's time per FCALL comes from INFO
commandstats, so the client and the network are not in it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import redis

from bench import data
from bench.report import Table
from redsession import SessionManager
from redsession.config import Settings

VARIANTS = ("operation id + event (as shipped)", "operation id, no event", "neither")


def _manager(url: str, variant: str) -> SessionManager:
    events = 0 if variant != VARIANTS[0] else Settings().events_maxlen
    m = SessionManager(redis.Redis.from_url(url), Settings(redis_url=url, events_maxlen=events))
    if variant == VARIANTS[2]:
        stamp = m.core.stamp

        def no_op(*args: Any, op: str = "", **kwargs: Any) -> Any:
            return stamp(*args, **kwargs)

        m.core.stamp = no_op  # type: ignore[method-assign]
    return m


def _usec_per_script(client: redis.Redis, run: Callable[[], None]) -> float:
    client.config_resetstat()
    run()
    stats = client.info("commandstats")["cmdstat_fcall"]
    return float(stats["usec_per_call"])


def writes(url: str, *, smoke: bool, rounds: int) -> list[Table]:
    n = 50 if smoke else 2_000
    admin = redis.Redis.from_url(url)
    admin.flushall()
    managers = {v: _manager(url, v) for v in VARIANTS}
    sids = {v: m.create_session("bench-writes").session_id for v, m in managers.items()}
    per: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(max(rounds, 1)):
        for v, m in managers.items():

            def run(m: SessionManager = m, sid: str = sids[v]) -> None:
                for _ in range(n):
                    m.log_interaction(
                        sid, user_message=data.USER_MESSAGE,
                        assistant_response=data.ASSISTANT_RESPONSE, metadata=data.METADATA,
                    )  # fmt: skip

            per[v].append(_usec_per_script(admin, run))
    keys = managers[VARIANTS[0]].keys
    sid = sids[VARIANTS[0]]
    ops_keys = (keys.ops(sid), keys.old_ops(sid))
    ops_bytes = sum(admin.memory_usage(k, samples=0) or 0 for k in ops_keys)
    ops_count = sum(admin.hlen(k) for k in ops_keys)
    stream_len = admin.xlen(keys.events)
    stream_bytes = admin.memory_usage(keys.events, samples=0) or 0
    for m in managers.values():
        m.close()
    admin.flushall()
    admin.close()

    base = statistics.median(per[VARIANTS[2]])
    t = Table(
        "Writes — the server's time per log_interaction script (INFO commandstats)",
        ["variant", "µs per FCALL (median of rounds)", "x neither"],
    )
    for v in VARIANTS:
        us = statistics.median(per[v])
        t.rows.append([v, f"{us:.2f}", f"{us / base:.2f}"])
    t.notes.append(
        f"{n:,} log_interaction calls per variant per round, {max(rounds, 1)} rounds, "
        "interleaved; the ops hash and the stream as left by the shipped variant"
    )
    t.notes.append(
        f"memory: the session's ops hashes hold {ops_count} operation ids in "
        f"{ops_bytes:,} bytes, in two generations (at most 256 ids); the event stream "
        f"{stream_len:,} entries in {stream_bytes:,} bytes "
        f"({stream_bytes / max(stream_len, 1):.0f} bytes per event)"
    )
    return [t]
