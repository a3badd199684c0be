"""The four operations, as redsession runs them and as the raw redis-py limit does.

An implementation ("impl") turns a Dataset into one callable per operation, ``fn(i)``,
which works on the i-th session (round robin). The raw limit does the same Redis work as
redsession (owner check, append, counters, sliding expiry, every index) in one EVALSHA of a
minimal script, with no validation and no models: plain dicts out.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
import redis
import redis.asyncio
from redis._parsers import _AsyncRESP2Parser, _RESP2Parser
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench import data
from redsession import AsyncSessionManager, SessionManager
from redsession.config import Settings
from redsession.storage.keys import Keys

OPS = ("log_interaction", "resume", "list_active_sessions", "export")
SyncFn = Callable[[int], object]
AsyncFn = Callable[[int], Awaitable[object]]
HISTORY = 20  # resume returns the session and this many newest interactions


@dataclass(frozen=True)
class Dataset:
    """Session ids (with owners) prepared before any timing, shared by every impl."""

    url: str
    log: list[tuple[str, str]]  # appended to by log_interaction
    read: list[tuple[str, str]]  # resumed; grouped by user for listing
    export: list[tuple[str, str]]  # exported: never appended to, so the size stays put
    users: list[str]
    length: int = HISTORY  # interactions each session starts with (peers load as many)


class Impl:
    """One way of doing the operations; subclasses fill in what they support."""

    name = "?"
    ops: tuple[str, ...] = OPS
    setups: tuple[str, ...] = ("sync", "asyncio", "processes")

    @classmethod
    def available(cls) -> str | None:
        """None when it can run here, else why not."""
        return None

    def prepare(self, ds: Dataset) -> None:
        """Load whatever data of its own it needs (peers keep their own format)."""

    def reset(self, ds: Dataset) -> None:
        """Undo growth caused by a log_interaction run (for stores whose cost grows)."""

    def sync(self, ds: Dataset) -> dict[str, SyncFn]:
        raise NotImplementedError

    async def aio(self, ds: Dataset) -> tuple[dict[str, AsyncFn], Callable[[], Awaitable[None]]]:
        raise NotImplementedError


# -- redsession ----------------------------------------------------------------------------


class Redsession(Impl):
    name = "redsession"
    parser: Any = None  # a redis-py parser class to force; None lets redis-py choose (hiredis)
    async_parser: Any = None

    def _client(self, url: str) -> redis.Redis:
        extra = {"parser_class": self.parser} if self.parser else {}
        return redis.Redis.from_url(url, **extra)

    def sync(self, ds: Dataset) -> dict[str, SyncFn]:
        if self.parser is None:  # the production client: blocking pool, no retries
            return _redsession_fns(SessionManager.from_url(ds.url), ds)
        m = SessionManager(self._client(ds.url), Settings(redis_url=ds.url))
        return _redsession_fns(m, ds)

    def _async_manager(self, url: str) -> AsyncSessionManager:
        if self.async_parser is None:
            return AsyncSessionManager.from_url(url)
        client = redis.asyncio.Redis.from_url(url, parser_class=self.async_parser)
        return AsyncSessionManager(client, Settings(redis_url=url))

    async def aio(self, ds: Dataset) -> tuple[dict[str, AsyncFn], Callable[[], Awaitable[None]]]:
        m = self._async_manager(ds.url)
        log, read, exp, users = ds.log, ds.read, ds.export, ds.users

        async def log_interaction(i: int) -> object:
            sid, uid = log[i % len(log)]
            return await m.log_interaction(
                sid, user_message=data.USER_MESSAGE, assistant_response=data.ASSISTANT_RESPONSE,
                metadata=data.METADATA, topics=data.TOPICS, user_id=uid,
            )  # fmt: skip

        async def resume(i: int) -> object:
            sid, uid = read[i % len(read)]
            return await m.resume_session(sid, uid)

        async def list_active(i: int) -> object:
            return await m.list_active_sessions(users[i % len(users)])

        async def export(i: int) -> object:
            sid, uid = exp[i % len(exp)]
            return await m.export_session_data(sid, user_id=uid)

        fns: dict[str, AsyncFn] = {
            "log_interaction": log_interaction, "resume": resume,
            "list_active_sessions": list_active, "export": export,
        }  # fmt: skip
        return fns, m.close


def _redsession_fns(m: SessionManager, ds: Dataset) -> dict[str, SyncFn]:
    log, read, exp, users = ds.log, ds.read, ds.export, ds.users

    def log_interaction(i: int) -> object:
        sid, uid = log[i % len(log)]
        return m.log_interaction(
            sid, user_message=data.USER_MESSAGE, assistant_response=data.ASSISTANT_RESPONSE,
            metadata=data.METADATA, topics=data.TOPICS, user_id=uid,
        )  # fmt: skip

    def resume(i: int) -> object:
        sid, uid = read[i % len(read)]
        return m.resume_session(sid, uid)

    def list_active(i: int) -> object:
        return m.list_active_sessions(users[i % len(users)])

    def export(i: int) -> object:
        sid, uid = exp[i % len(exp)]
        return m.export_session_data(sid, user_id=uid)

    return {"log_interaction": log_interaction, "resume": resume,
            "list_active_sessions": list_active, "export": export}  # fmt: skip


class RedsessionGlide(Redsession):
    """redsession's asyncio manager on valkey-glide (Settings.async_driver; the glide extra)."""

    name = "redsession, valkey-glide"
    setups = ("asyncio",)

    @classmethod
    def available(cls) -> str | None:
        try:
            import glide  # noqa: F401
        except ImportError:
            return "valkey-glide is not installed (the glide extra)"
        return None

    def _async_manager(self, url: str) -> AsyncSessionManager:
        return AsyncSessionManager.from_url(url, async_driver="valkey-glide")


class RedsessionNoHiredis(Redsession):
    """redsession with redis-py's pure-Python reply parser: does hiredis pay?"""

    name = "redsession, no hiredis"
    ops = ("log_interaction", "resume")
    parser = _RESP2Parser
    async_parser = _AsyncRESP2Parser


# -- the raw limit -------------------------------------------------------------------------

# KEYS[1] hash, KEYS[2] log, KEYS[3..6] sessions, users, expiry, dirty indexes.
# ARGV[1] record, [2] activity µs, [3] expires µs, [4] expires ms, [5] now µs, [6] prefs TTL ms,
# [7] owner, [8] session id, [9..11] user key head, sessions tail, prefs tail, [12..] topics.
RAW_LOG = """
local uid = redis.call('HGET', KEYS[1], 'user_id')
if not uid or uid ~= ARGV[7] then return 0 end
if #ARGV > 11 then
  local topics = cjson.decode(redis.call('HGET', KEYS[1], 'topics'))
  local seen, added = {}, false
  for _, t in ipairs(topics) do seen[t] = true end
  for i = 12, #ARGV do
    if not seen[ARGV[i]] then seen[ARGV[i]] = true; topics[#topics + 1] = ARGV[i]; added = true end
  end
  if added then redis.call('HSET', KEYS[1], 'topics', cjson.encode(topics)) end
end
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'total_interactions', n, 'last_activity', ARGV[2],
  'expires_at', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
redis.call('ZADD', ARGV[9] .. uid .. ARGV[10], ARGV[2], ARGV[8])
redis.call('PEXPIRE', ARGV[9] .. uid .. ARGV[11], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[8])
redis.call('ZADD', KEYS[4], 'GT', ARGV[2], uid)
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[8] .. ':' .. uid)
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[8])
return n
"""

# As RAW_LOG, without the record and topics; ARGV[1] how many newest interactions.
RAW_RESUME = """
local uid = redis.call('HGET', KEYS[1], 'user_id')
if not uid or uid ~= ARGV[7] then return 0 end
redis.call('HSET', KEYS[1], 'last_activity', ARGV[2], 'expires_at', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
redis.call('ZADD', ARGV[9] .. uid .. ARGV[10], ARGV[2], ARGV[8])
redis.call('PEXPIRE', ARGV[9] .. uid .. ARGV[11], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[8])
redis.call('ZADD', KEYS[4], 'GT', ARGV[2], uid)
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[8] .. ':' .. uid)
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[8])
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], -tonumber(ARGV[1]), -1)}
"""

# KEYS[1] the user's sessions index; ARGV[1] limit, ARGV[2..3] session hash key head and tail.
RAW_LIST = """
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local rows = {}
for i, sid in ipairs(ids) do
  rows[i] = redis.call('HMGET', ARGV[2] .. sid .. ARGV[3], 'user_id', 'created_at',
    'last_activity', 'total_interactions', 'expires_at')
end
return {ids, rows}
"""

# KEYS[1] hash, KEYS[2] log; ARGV[1] owner.
RAW_EXPORT = """
local uid = redis.call('HGET', KEYS[1], 'user_id')
if not uid or uid ~= ARGV[1] then return 0 end
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
"""
_SUMMARY = ("user_id", "created_at", "last_activity", "total_interactions", "expires_at")


class _RawCommon:
    """Argument building shared by the sync and async raw clients."""

    def __init__(self, ds: Dataset) -> None:
        s = Settings(redis_url=ds.url)
        self.keys = k = Keys(s.key_prefix)
        self.ttl_us = int(s.session_ttl.total_seconds() * 1_000_000)
        self.prefs_ms = int(s.preferences_ttl.total_seconds() * 1000)
        us, up = k.user_sessions_family, k.user_prefs_family
        self.user_parts = (us.head, us.tail, up.tail)
        self.hash_head, self.hash_tail = k.session_family.head, k.session_family.tail
        self.indexes = (k.sessions, k.users, k.expiry, k.dirty)
        self.sha = {name: _sha(src) for name, src in _SCRIPTS.items()}

    def write_args(self, sid: str, uid: str, *lead: Any) -> tuple[Any, ...]:
        now = time.time_ns() // 1000
        exp = now + self.ttl_us
        k = self.keys
        return (
            6, k.session(sid), k.log(sid), *self.indexes,
            *lead, now, exp, exp // 1000, now, self.prefs_ms, uid, sid, *self.user_parts,
        )  # fmt: skip

    def log_args(self, sid: str, uid: str) -> tuple[Any, ...]:
        record = orjson.dumps(
            {"id": secrets.token_urlsafe(12), "timestamp": datetime.now(timezone.utc),
             "user_message": data.USER_MESSAGE, "assistant_response": data.ASSISTANT_RESPONSE,
             "metadata": data.METADATA, "topics": data.TOPICS},
            option=orjson.OPT_UTC_Z,
        )  # fmt: skip
        return (self.sha["log"], *self.write_args(sid, uid, record), *data.TOPICS)

    def resume_args(self, sid: str, uid: str) -> tuple[Any, ...]:
        return (self.sha["resume"], *self.write_args(sid, uid, HISTORY))

    def list_args(self, uid: str) -> tuple[Any, ...]:
        key = self.keys.user_sessions(uid)
        return (self.sha["list"], 1, key, 100, self.hash_head, self.hash_tail)

    def export_args(self, sid: str, uid: str) -> tuple[Any, ...]:
        return (self.sha["export"], 2, self.keys.session(sid), self.keys.log(sid), uid)


def _sha(src: str) -> str:
    import hashlib

    return hashlib.sha1(src.encode()).hexdigest()


_SCRIPTS = {"log": RAW_LOG, "resume": RAW_RESUME, "list": RAW_LIST, "export": RAW_EXPORT}


def _hash(flat: list[bytes]) -> dict[str, str]:
    it = iter(flat)
    return {k.decode(): v.decode() for k, v in zip(it, it)}


def _record(r: bytes) -> Any:
    # The datasets are shared: a record may be redsession's ("TIME ID KIND BODY") or the raw
    # store's own JSON.
    return orjson.loads(r if r[:1] == b"{" else r.split(b" ", 3)[3])


def _resume_result(reply: Any) -> dict[str, Any]:
    h: dict[str, Any] = _hash(reply[0])
    h["history"] = [_record(r) for r in reply[1]]
    return h


def _list_result(reply: Any) -> list[dict[str, str]]:
    ids, rows = reply
    return [
        {"session_id": sid.decode(), **{f: v.decode() for f, v in zip(_SUMMARY, row)}}
        for sid, row in zip(ids, rows)
    ]


def _export_result(reply: Any) -> dict[str, Any]:
    h: dict[str, Any] = _hash(reply[0])
    for f in ("context", "topics", "merged_from"):
        h[f] = orjson.loads(h[f])
    return {"format": "redsession.session", "version": 2, "session": h,
            "history": [_record(r) for r in reply[1]]}  # fmt: skip


class Raw(Impl):
    """The baseline: a hand-rolled store whose client is built as redsession builds its own
    (a blocking pool, socket and connect timeouts, no retries): a careful team sets those."""

    name = "hand-rolled (limit)"

    def _sync_client(self, url: str) -> redis.Redis:
        s = Settings()
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=s.max_connections, timeout=s.socket_timeout,
            socket_timeout=s.socket_timeout, socket_connect_timeout=s.connect_timeout,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        return redis.Redis.from_pool(pool)

    def _async_client(self, url: str) -> redis.asyncio.Redis:
        s = Settings()
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=s.max_connections, timeout=s.socket_timeout,
            socket_timeout=s.socket_timeout, socket_connect_timeout=s.connect_timeout,
            retry=AsyncRetry(NoBackoff(), 0),
        )  # fmt: skip
        return redis.asyncio.Redis.from_pool(pool)

    def sync(self, ds: Dataset) -> dict[str, SyncFn]:
        c = _RawCommon(ds)
        r = self._sync_client(ds.url)
        for src in _SCRIPTS.values():
            r.script_load(src)
        log, read, exp, users = ds.log, ds.read, ds.export, ds.users

        def log_interaction(i: int) -> object:
            return r.evalsha(*c.log_args(*log[i % len(log)]))

        def resume(i: int) -> object:
            return _resume_result(r.evalsha(*c.resume_args(*read[i % len(read)])))

        def list_active(i: int) -> object:
            return _list_result(r.evalsha(*c.list_args(users[i % len(users)])))

        def export(i: int) -> object:
            return _export_result(r.evalsha(*c.export_args(*exp[i % len(exp)])))

        return {"log_interaction": log_interaction, "resume": resume,
                "list_active_sessions": list_active, "export": export}  # fmt: skip

    async def aio(self, ds: Dataset) -> tuple[dict[str, AsyncFn], Callable[[], Awaitable[None]]]:
        c = _RawCommon(ds)
        r = self._async_client(ds.url)
        for src in _SCRIPTS.values():
            await r.script_load(src)
        log, read, exp, users = ds.log, ds.read, ds.export, ds.users

        async def log_interaction(i: int) -> object:
            return await r.evalsha(*c.log_args(*log[i % len(log)]))

        async def resume(i: int) -> object:
            return _resume_result(await r.evalsha(*c.resume_args(*read[i % len(read)])))

        async def list_active(i: int) -> object:
            return _list_result(await r.evalsha(*c.list_args(users[i % len(users)])))

        async def export(i: int) -> object:
            return _export_result(await r.evalsha(*c.export_args(*exp[i % len(exp)])))

        async def close() -> None:
            await r.aclose()

        fns: dict[str, AsyncFn] = {
            "log_interaction": log_interaction, "resume": resume,
            "list_active_sessions": list_active, "export": export,
        }  # fmt: skip
        return fns, close


class RawPlain(Raw):
    """The same store on redis-py's default client: what those settings cost."""

    name = "hand-rolled, plain client"
    ops = ("log_interaction", "resume")

    def _sync_client(self, url: str) -> redis.Redis:
        return redis.Redis.from_url(url)

    def _async_client(self, url: str) -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(url)
