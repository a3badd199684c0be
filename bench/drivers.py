"""Would another asyncio client beat redis.asyncio? The hand-rolled store on each, 64 tasks.

    python -m bench.drivers      # pip install coredis valkey-glide; not part of make bench

Issue 15 asked to try a multiplexing client (valkey-glide or coredis) behind the sans-IO core
and keep it only if it wins. This measures the question before any driver is written: the
hand-rolled store's own scripts (bench/ops.py) on redis.asyncio as redsession builds it, on
coredis, and on valkey-glide (one multiplexed connection, its core in Rust), interleaved over
rounds in one run, against the same private server and data. A client not installed is left
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import harness, suite
from bench.ops import _SCRIPTS, Dataset, Raw, _RawCommon, _resume_result

DURATION, TASKS, ROUNDS = 2.0, 64, 3


async def _rate(fn: Callable[[int], Awaitable[Any]]) -> float:
    done, stop = 0, time.perf_counter() + DURATION

    async def task(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            await fn(i)
            i += TASKS
            done += 1

    await asyncio.gather(*(task(k) for k in range(TASKS)))
    return done / DURATION


Call = Callable[[tuple[Any, ...]], Awaitable[Any]]  # EVALSHA sha numkeys keys... args...


async def _clients(url: str) -> dict[str, tuple[Call, Callable[[], Awaitable[None]]]]:
    """Each installed client: (how it runs EVALSHA, how it closes)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    rp = Raw()._async_client(url)
    for src in _SCRIPTS.values():
        await rp.script_load(src)
    out: dict[str, tuple[Call, Callable[[], Awaitable[None]]]] = {
        "redis.asyncio": (lambda a: rp.evalsha(*a), rp.aclose),
    }
    with contextlib.suppress(ImportError):
        import coredis

        cd: Any = coredis.Redis(host=host, port=int(port), stream_timeout=5, connect_timeout=5)
        await cd.__aenter__()

        async def coredis_call(a: tuple[Any, ...]) -> Any:
            return await cd.evalsha(a[0], keys=a[2 : 2 + a[1]], args=a[2 + a[1] :])

        out["coredis"] = (coredis_call, lambda: cd.__aexit__(None, None, None))
    with contextlib.suppress(ImportError):
        import glide

        config = glide.GlideClientConfiguration([glide.NodeAddress(host, int(port))])
        gl = await glide.GlideClient.create(config)

        async def glide_call(a: tuple[Any, ...]) -> Any:
            args = [str(x) if isinstance(x, int) else x for x in a]  # glide takes str/bytes
            return await gl.custom_command(["EVALSHA", *args])

        out["valkey-glide"] = (glide_call, gl.close)
    return out


async def _compare(url: str, ds: Dataset) -> dict[str, list[float]]:
    c = _RawCommon(ds)
    clients = await _clients(url)
    fns: dict[str, Callable[[int], Awaitable[Any]]] = {}
    for name, (call, _) in clients.items():

        async def log(i: int, call: Call = call) -> Any:
            return await call(c.log_args(*ds.log[i % len(ds.log)]))

        async def resume(i: int, call: Call = call) -> Any:
            return _resume_result(await call(c.resume_args(*ds.read[i % len(ds.read)])))

        fns[f"{name} log_interaction"], fns[f"{name} resume"] = log, resume
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            rates[name].append(await _rate(fn))
    for _, close in clients.values():
        await close()
    return rates


def main() -> int:
    with harness.server() as srv:
        ds = suite.build_dataset(srv.url, 50, 200)
        rates = asyncio.run(_compare(srv.url, ds))
    names = sorted({k.split(" ")[0] for k in rates}, key=lambda n: n != "redis.asyncio")
    for op in ("log_interaction", "resume"):
        base = statistics.median(rates[f"redis.asyncio {op}"])
        for client in names:
            r = statistics.median(rates[f"{client} {op}"])
            print(f"{op:16s} {client:14s} {r:8,.0f} ops/s  x redis.asyncio {r / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
