"""Framework backends: our adapters beside each framework's own Redis backend, in one run.

- OpenAI Agents SDK: RedsessionSession against the SDK's RedisSession
  (``agents.extensions.memory``, the ``openai-agents[redis]`` extra).
- Google ADK: RedsessionSessionService against ADK's RedisSessionService
  (``google.adk.integrations.redis``, the ``google-adk[redis]`` extra).

Each implementation gets a fresh private server and one session per history length; an
append, a read of the newest items and a read of everything are timed on one asyncio task.
A framework or a first-party backend that does not import here is reported as unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import redis.asyncio

from bench import data
from bench.harness import Budget, Figure, Run, ratio, server
from bench.report import Table, fmt_rate, fmt_us

TTL_S = 7 * 86_400  # redsession's default session_ttl, given to the first-party backends too
RECENT = 20  # the "newest N" read, as a runner with a history limit makes it
CHUNK = 1_000  # items per add_items call when loading the SDK sessions
MIN_OPS = 3  # timed calls per measurement at least: a one-second call still has a median
APP, USER = "bench", "bench-user"


@dataclass
class Measured:
    """One operation on one loaded session: ``call(make())`` is timed; ``make`` and
    ``undo`` (which puts the session back to its length) run around it, untimed."""

    call: Callable[[Any], Awaitable[object]]
    make: Callable[[], Any] = lambda: None
    undo: Callable[[], Awaitable[object]] | None = None


async def timed(op: Measured, duration: float, warmup: float, min_ops: int = MIN_OPS) -> Run:
    """Await ``op`` in a loop on one task: ops/s is the inverse of the mean timed call."""
    clock = time.perf_counter_ns

    async def once() -> int:
        arg = op.make()
        begin = clock()
        await op.call(arg)
        spent = clock() - begin
        if op.undo is not None:
            await op.undo()
        return spent

    warm = clock() + int(warmup * 1e9)
    while clock() < warm:
        await once()
    lat: list[int] = []
    stop = clock() + int(duration * 1e9)
    while clock() < stop or len(lat) < min_ops:
        lat.append(await once())
    return Run(len(lat), sum(lat) / 1e9, lat)


class Impl:
    """One backend of one framework, on its own server."""

    name = "?"
    first_party = False

    @classmethod
    def available(cls) -> str | None:
        return None

    def __init__(self, url: str) -> None:
        self.facts: list[str] = []  # what loading found out, for the table's notes

    async def load(self, length: int) -> dict[str, Measured]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def _missing(*modules: str) -> str | None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            return f"{name} does not import: {e}"
    return None


# -- OpenAI Agents SDK ---------------------------------------------------------------------


def _sdk_item(k: int) -> dict[str, Any]:
    """An item as the Runner stores it: the user's input, or the model's output message."""
    if k % 2 == 0:
        return {"role": "user", "content": data.USER_MESSAGE}
    return {
        "id": "msg_" + secrets.token_hex(16), "type": "message", "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": data.ASSISTANT_RESPONSE, "annotations": []}],
    }  # fmt: skip


SDK_OPS = ("add_items (one item)", f"get_items(limit={RECENT})", "get_items() (all)")


class _SdkImpl(Impl):
    def session(self, sid: str) -> Any:
        raise NotImplementedError

    async def load(self, length: int) -> dict[str, Measured]:
        s = self.session(f"fw-sdk-{length}")
        items = [_sdk_item(k) for k in range(length)]
        for at in range(0, length, CHUNK):
            await s.add_items(items[at : at + CHUNK])
        return {
            SDK_OPS[0]: Measured(s.add_items, lambda: [_sdk_item(1)], s.pop_item),
            SDK_OPS[1]: Measured(lambda _: s.get_items(limit=RECENT)),
            SDK_OPS[2]: Measured(lambda _: s.get_items()),
        }


class OursSdk(_SdkImpl):
    name = "redsession RedsessionSession"

    @classmethod
    def available(cls) -> str | None:
        return _missing("redsession.integrations.openai_agents")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from redsession import AsyncSessionManager

        module = importlib.import_module("redsession.integrations.openai_agents")
        self.cls = module.RedsessionSession
        self.manager = AsyncSessionManager.from_url(url)

    def session(self, sid: str) -> Any:
        return self.cls(sid, self.manager, user_id=USER)

    async def close(self) -> None:
        await self.manager.close()


class TheirsSdk(_SdkImpl):
    name = "SDK RedisSession (first-party)"
    first_party = True

    @classmethod
    def available(cls) -> str | None:
        why = _missing("agents")
        if why is None:
            try:
                importlib.import_module("agents.extensions.memory").RedisSession  # noqa: B018
            except ImportError as e:  # the extension module raises it on attribute access
                why = f"agents.extensions.memory.RedisSession: {e}"
        return why

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.cls = importlib.import_module("agents.extensions.memory").RedisSession
        self.client = redis.asyncio.Redis.from_url(url)

    def session(self, sid: str) -> Any:
        # With a TTL it refreshes expiry on every write, as redsession does (on reads too).
        return self.cls(sid, redis_client=self.client, ttl=TTL_S)

    async def close(self) -> None:
        await self.client.aclose()


# -- Google ADK ----------------------------------------------------------------------------


def _adk_event(k: int, at: float | None = None) -> Any:
    """The k-th event of a chat: the user's message, then the model's answer."""
    events = importlib.import_module("google.adk.events")
    types = importlib.import_module("google.genai.types")
    user = k % 2 == 0
    text = data.USER_MESSAGE if user else data.ASSISTANT_RESPONSE
    content = types.Content(role="user" if user else "model", parts=[types.Part(text=text)])
    extra = {} if at is None else {"timestamp": at}
    return events.Event(invocation_id=f"inv-{k // 2}", author="user" if user else "assistant",
                        content=content, **extra)  # fmt: skip


def _adk_events(length: int) -> list[Any]:
    start = time.time() - length - 1
    return [_adk_event(k, start + k) for k in range(length)]


ADK_OPS = ("append_event", f"get_session(num_recent_events={RECENT})", "get_session() (all)")


class _AdkImpl(Impl):
    service: Any

    async def store(self, sid: str, events: list[Any]) -> None:
        raise NotImplementedError

    async def drop_newest(self, sid: str) -> None:
        raise NotImplementedError

    async def load(self, length: int) -> dict[str, Measured]:
        cfg = importlib.import_module("google.adk.sessions.base_session_service")
        sid, svc = f"fw-adk-{length}", self.service
        await svc.create_session(app_name=APP, user_id=USER, session_id=sid)
        await self.store(sid, _adk_events(length))
        recent = cfg.GetSessionConfig(num_recent_events=RECENT)

        def get(config: Any) -> Callable[[Any], Awaitable[object]]:
            return lambda _: svc.get_session(app_name=APP, user_id=USER, session_id=sid,
                                             config=config)  # fmt: skip

        # The session a runner would append to; the newest events only, for both backends.
        session: Any = await get(recent)(None)
        assert session is not None
        assert len(session.events) == min(length, RECENT)

        async def undo() -> None:
            session.events.pop()  # append_event added it to the caller's copy
            await self.drop_newest(sid)

        return {
            ADK_OPS[0]: Measured(
                lambda e: svc.append_event(session, e), lambda: _adk_event(1), undo
            ),
            ADK_OPS[1]: Measured(get(recent)),
            ADK_OPS[2]: Measured(get(None)),
        }


class OursAdk(_AdkImpl):
    name = "redsession RedsessionSessionService"

    @classmethod
    def available(cls) -> str | None:
        return _missing("redsession.integrations.adk")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.adk = importlib.import_module("redsession.integrations.adk")
        self.service = self.adk.RedsessionSessionService.from_url(url)

    async def store(self, sid: str, events: list[Any]) -> None:
        session = await self.service.get_session(app_name=APP, user_id=USER, session_id=sid)
        for e in events:  # O(1) each: loading through the adapter itself is quick
            await self.service.append_event(session, e)

    async def drop_newest(self, sid: str) -> None:
        await self.service.manager.pop_item(
            self.adk.session_key(APP, USER, sid), user_id=self.adk.owner_of(APP, USER)
        )

    async def close(self) -> None:
        await self.service.close()


class TheirsAdk(_AdkImpl):
    name = "ADK RedisSessionService (first-party)"
    first_party = True

    @classmethod
    def available(cls) -> str | None:
        return _missing("google.adk.integrations.redis")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        module = importlib.import_module("google.adk.integrations.redis")
        # decode_responses as its own from-config client has it
        self.client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        self.service = module.RedisSessionService(redis_client=self.client)
        self.blobs: dict[str, str] = {}

    async def store(self, sid: str, events: list[Any]) -> None:
        # Its append_event rewrites the whole session per event (O(L^2) to load); this is the
        # string those L appends would leave: its own Session model, dumped as it dumps it.
        sessions = importlib.import_module("google.adk.sessions")
        last = events[-1].timestamp if events else 0.0
        stored = sessions.Session(
            id=sid, app_name=APP, user_id=USER, state={}, events=events, last_update_time=last
        )
        blob = self.blobs[sid] = stored.model_dump_json()
        await self.client.set(self._key(sid), blob, ex=self.service.config.ttl_seconds)
        self.facts.append(f"{len(events):,} events: one JSON string of {_size(len(blob))}")

    async def drop_newest(self, sid: str) -> None:
        await self.client.set(self._key(sid), self.blobs[sid], ex=self.service.config.ttl_seconds)

    def _key(self, sid: str) -> str:
        return str(self.service._session_key(APP, USER, sid))  # its own key layout

    async def close(self) -> None:
        await self.client.aclose()


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} KB"


# -- the run -------------------------------------------------------------------------------


@dataclass
class Framework:
    title: str
    ops: tuple[str, ...]
    impls: tuple[type[Impl], ...]  # first-party first
    notes: list[str] = field(default_factory=list)


FRAMEWORKS = (
    Framework("OpenAI Agents SDK sessions", SDK_OPS, (TheirsSdk, OursSdk), [
        "the SDK's RedisSession keeps a list per session beside a hash: add_items is WATCH, "
        "TYPE checks and TIME, then MULTI (RPUSH, HSET, PEXPIREAT of each key) EXEC; "
        "get_items is one LRANGE and a json.loads per item, so its append and its read of "
        "the newest items do not grow with the history either",
        "one item appended per add_items; the appended item is popped after each timed call "
        "(pop_item, untimed), so every append runs at the stated length",
        f"both sessions expire {TTL_S // 86_400} days after the last write (the SDK's with "
        "ttl=); redsession also slides the expiry on reads, the SDK's does not",
        "loaded through each backend's own add_items, 1,000 items a call",
    ]),
    Framework("Google ADK session services", ADK_OPS, (TheirsAdk, OursAdk), [
        "ADK's RedisSessionService keeps the whole session, events and all, as one JSON "
        "string: append_event is EXISTS, then WATCH, GET, parse, append, SET of the whole "
        "string; get_session GETs and parses all of it and slices the events afterwards; the "
        "servers keep an AOF (appendfsync everysec), so each of its appends writes the whole "
        "string there too",
        f"append_event to the session as get_session(num_recent_events={RECENT}) returned it; "
        "after each timed call the event is taken back (untimed: redsession's pop_item; "
        "ADK's service: SET of the session's JSON as loaded), so every append runs at the "
        "stated length",
        "redsession loaded through its own append_event; ADK's service through create_session "
        "and then one SET of its Session model with the events, dumped as its append_event "
        "dumps it (appending them one by one rewrites the whole session each time)",
    ]),
)  # fmt: skip


def frameworks(*, smoke: bool, budget: Budget) -> list[Table]:
    """Each framework's operations at a short and a long history, ours beside theirs."""
    lengths = (20, 200) if smoke else (20, 10_000)
    if smoke:  # the imports alone take ~2 s; keep the rest of the section to about as much
        budget = replace(budget, duration=min(budget.duration, 0.02),
                         warmup=min(budget.warmup, 0.005))  # fmt: skip
    return [_one(fw, lengths, budget) for fw in FRAMEWORKS]


def _one(fw: Framework, lengths: tuple[int, ...], budget: Budget) -> Table:
    ready = [cls for cls in fw.impls if cls.available() is None]
    skipped = [f"{c.name} unavailable: {c.available()}" for c in fw.impls if c not in ready]
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(server()).url for _ in ready]  # a fresh server each
        figs, impls = asyncio.run(_measure(fw, ready, urls, lengths, budget)) if ready else ({}, [])
    return _table(fw, impls, lengths, figs, skipped)


async def _measure(
    fw: Framework, classes: list[type[Impl]], urls: list[str], lengths: tuple[int, ...],
    budget: Budget,
) -> tuple[dict[tuple[str, int, str], Figure], list[Impl]]:  # fmt: skip
    impls = [cls(url) for cls, url in zip(classes, urls)]
    figs: dict[tuple[str, int, str], Figure] = {}
    try:
        ops = {(n, i.name): await i.load(n) for n in lengths for i in impls}
        rng = random.Random(13)
        for _ in range(budget.rounds):
            for op in fw.ops:
                for n in lengths:  # back to back, so the growth ratio pairs close neighbours
                    order = list(impls)
                    rng.shuffle(order)  # neither side always runs first
                    for impl in order:
                        run = await timed(ops[n, impl.name][op], budget.duration, budget.warmup)
                        fig = figs.setdefault((op, n, impl.name), Figure("asyncio", op, impl.name))
                        fig.add(run)
    finally:
        for impl in impls:
            await impl.close()
    return figs, impls


def _table(
    fw: Framework, impls: list[Impl], lengths: tuple[int, ...],
    figs: dict[tuple[str, int, str], Figure], skipped: list[str],
) -> Table:  # fmt: skip
    short, long = lengths[0], lengths[-1]
    t = Table(
        f"Framework backends — {fw.title} (asyncio, one task)",
        ["operation", "implementation",
         *[h for n in lengths for h in (f"ops/s at {n:,}", f"p50 / p99 µs at {n:,}")],
         f"time at {long:,} / at {short:,}", *[f"x first-party at {n:,}" for n in lengths]],
    )  # fmt: skip
    base = next((i for i in impls if i.first_party), None)
    for op in fw.ops:
        for impl in impls:
            row = [figs[op, n, impl.name] for n in lengths]
            cells = [c for f in row for c in (_rate(f.rate), f"{fmt_us(f.p50)} / {fmt_us(f.p99)}")]
            vs = []
            for n, f in zip(lengths, row):
                vs.append("—" if base is None else _x(ratio(f, figs[op, n, base.name])))
            t.rows.append([op, impl.name, *cells, _x(ratio(row[0], row[-1])), *vs])
    t.notes += fw.notes
    for impl in impls:
        t.notes += [f"{impl.name}: {fact}" for fact in impl.facts]
    t.notes += skipped
    if fw is FRAMEWORKS[0]:
        t.notes += _explained(short, long)
    return t


def _explained(short: int, long: int) -> list[str]:
    return [
        "each implementation on its own fresh server, one session per history length; rounds "
        "interleaved, the two backends of an operation back to back in a shuffled order; figures "
        "are medians over the rounds, ratios the median of the per-round ratios",
        "ops/s is one over the mean time of the timed call; p50 / p99 over a round's calls "
        f"(at least {MIN_OPS} a measurement: where a call takes most of a second, p99 is the "
        "slowest of a handful)",
        f"'time at {long:,} / at {short:,}' is how many times longer a call takes on the long "
        "history: 1.00 is flat, the cost does not depend on the history length; 'x first-party' "
        "is redsession's throughput over the first-party backend's, measured in the same rounds "
        "(above 1: redsession is faster)",
        "a read of the whole history is O(length) for every backend; the append and the read of "
        f"the newest {RECENT} are where the designs differ",
    ]


def _rate(x: float) -> str:
    return f"{x:.1f}" if x < 10 else fmt_rate(x)


def _x(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:.2f}"
