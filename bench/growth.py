"""Growth curves: cost against history length, and dump/cleanup against the number of sessions."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import redis

from bench import data
from bench.harness import Figure, time_sync
from bench.ops import Dataset, Impl, Raw, Redsession
from bench.peers import peers
from bench.report import Table, fmt_rate, fmt_us
from redsession import SessionManager
from redsession.config import Settings

SESSIONS_PER_LENGTH = 10


def history_growth(url: str, *, smoke: bool, rounds: int) -> list[Table]:
    """log_interaction and resume (sync, one client) on sessions of growing history."""
    lengths = [1, 10, 100] if smoke else [1, 100, 1_000, 10_000]
    duration, warmup = (0.03, 0.01) if smoke else (0.5, 0.1)
    rounds = max(1, min(rounds, 3))
    with redis.Redis.from_url(url) as client:
        manager = SessionManager(client, Settings(redis_url=url))
        sets = {}
        for n in lengths:
            group = [(f"g{n}s{k}", f"guser{k}") for k in range(SESSIONS_PER_LENGTH)]
            data.load(manager, client, (data.export_doc(s, u, n) for s, u in group), batch=1)
            sets[n] = Dataset(url=url, log=group, read=group, export=group,
                              users=sorted({u for _, u in group}), length=n)  # fmt: skip
    impls: list[Impl] = [Redsession(), Raw()]
    impls += [cls() for cls in peers() if cls.available() is None]
    fns = {}
    for n, ds in sets.items():
        for impl in impls:
            impl.prepare(ds)
            fns[n, impl.name] = impl.sync(ds)
    figs: dict[tuple[str, int, str], Figure] = {}
    rng = random.Random(3)
    for _ in range(rounds):
        for n in lengths:
            for op in ("log_interaction", "resume"):
                order = [i for i in impls if op in i.ops]
                rng.shuffle(order)
                for impl in order:
                    if op == "log_interaction":
                        impl.reset(sets[n])
                    run = time_sync(fns[n, impl.name][op], duration, warmup)
                    key = (op, n, impl.name)
                    figs.setdefault(key, Figure("sync", op, impl.name)).add(run)
    tables = []
    for op in ("log_interaction", "resume"):
        t = Table(
            f"Growth — {op} against history length (sync, one client; ops/s, p50 µs)",
            ["implementation", *[f"{n:,} interactions" for n in lengths], "last / first"],
        )
        for impl in impls:
            if op not in impl.ops:
                continue
            row = [figs[op, n, impl.name] for n in lengths]
            cells = [f"{fmt_rate(f.rate)} ({fmt_us(f.p50)})" for f in row]
            t.rows.append([impl.name, *cells, f"{row[-1].rate / row[0].rate:.2f}"])
        t.notes.append(
            f"{SESSIONS_PER_LENGTH} sessions per length, round robin; appends during a "
            "measurement add to the length (peers are reset before each measurement)"
        )
        tables.append(t)
    return tables


def dump_cleanup(url: str, *, smoke: bool) -> list[Table]:
    """dump_sessions and cleanup_expired_sessions with 1% of N sessions changed or expired."""
    sizes = [200, 1_000] if smoke else [1_000, 10_000, 100_000]
    repeats = 1 if smoke else 3
    t = Table(
        "Dump and cleanup against the number of sessions (1% changed / expired)",
        ["sessions", "changed", "dump ms", "dump µs per changed", "expired", "cleanup ms",
         "cleanup µs per expired"],
    )  # fmt: skip
    for total in sizes:
        dump_ms, clean_ms, changed, expired = _one_size(url, total, repeats)
        t.rows.append([
            f"{total:,}", f"{changed:,}", f"{dump_ms:,.1f}", f"{dump_ms * 1000 / changed:,.0f}",
            f"{expired:,}", f"{clean_ms:,.1f}", f"{clean_ms * 1000 / max(expired, 1):,.0f}",
        ])  # fmt: skip
    t.notes.append(
        "sessions hold 2 interactions each; dump writes the changed sessions' files (fsync "
        f"included) to a temporary data dir; dump figures are the median of {repeats} runs"
    )
    t.notes.append(
        "flat 'per changed' and 'per expired' columns mean the cost follows what changed or "
        "expired, not the total"
    )
    return [t]


def _one_size(url: str, total: int, repeats: int) -> tuple[float, float, int, int]:
    one_pct = max(1, total // 100)
    with redis.Redis.from_url(url) as client, tempfile.TemporaryDirectory() as tmp:
        client.flushall()
        settings = Settings(redis_url=url, data_dir=Path(tmp))
        manager = SessionManager(client, settings)
        sids = [(f"d{i:07d}", f"duser{i % max(1, total // 5):06d}") for i in range(total)]
        expiring = set(random.Random(5).sample(range(total), one_pct))
        ttl_s = 2.0
        docs = (
            data.export_doc(s, u, 2,
                            expires_in=timedelta(seconds=ttl_s) if i in expiring else data.DAY * 7)
            for i, (s, u) in enumerate(sids)
        )  # fmt: skip
        data.load(manager, client, docs)
        loaded_at = time.monotonic()  # every document (and its expiry) was made before this
        client.delete(manager.keys.dirty)  # the state right after a dump of everything
        rng = random.Random(total)
        dumps = []
        for _ in range(repeats):
            for i in rng.sample(range(total), one_pct):
                sid, uid = sids[i]
                if i not in expiring:
                    manager.log_interaction(sid, user_message="again", user_id=uid)
            changed = int(client.zcard(manager.keys.dirty))
            t0 = time.perf_counter()
            manager.dump_sessions(Path(tmp))
            dumps.append((time.perf_counter() - t0) * 1000)
        time.sleep(max(0.0, loaded_at + ttl_s + 0.2 - time.monotonic()))
        t0 = time.perf_counter()
        expired = manager.cleanup_expired_sessions()
        clean = (time.perf_counter() - t0) * 1000
        client.flushall()
    return statistics.median(dumps), clean, changed, expired
