"""Peer session stores on plain Redis, each used the way its library uses Redis.

- JsonBlob: one JSON document per session, read-modify-write (flask-session, connect-redis,
  express-session and most web session middleware): GET, decode, change, encode, SET EX.
  Not atomic: two writers to one session lose an update; no index of a user's sessions.
- LangChain: langchain-community's RedisChatMessageHistory, a list of messages per session
  (LPUSH + EXPIRE per message; reading returns the whole list). Needs the bench extra.
"""

from __future__ import annotations

import importlib
import importlib.util
import secrets
import warnings
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import redis
import redis.asyncio

from bench import data
from bench.ops import HISTORY, AsyncFn, Dataset, Impl, SyncFn

TTL_S = 7 * 86_400
BLOB_PREFIX = "peer:blob:"  # the peer's own namespace, as flask-session's "session:"
LC_PREFIX = "message_store:"  # RedisChatMessageHistory's default key prefix


def _blob(sid: str, uid: str, n: int) -> bytes:
    doc = data.export_doc(sid, uid, n)
    return orjson.dumps({**doc["session"], "interactions": doc["interactions"]})


def _new_interaction() -> dict[str, Any]:
    return {
        "id": secrets.token_urlsafe(12), "timestamp": datetime.now(timezone.utc).isoformat(),
        "user_message": data.USER_MESSAGE, "assistant_response": data.ASSISTANT_RESPONSE,
        "metadata": data.METADATA, "topics": data.TOPICS,
    }  # fmt: skip


def _append(raw: Any) -> bytes:
    doc = orjson.loads(raw) if raw else {"interactions": []}
    doc["interactions"].append(_new_interaction())
    doc["last_activity"] = datetime.now(timezone.utc).isoformat()
    doc["total_interactions"] = len(doc["interactions"])
    return orjson.dumps(doc)


def _resumed(raw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(raw) if raw else {}
    doc["history"] = doc.pop("interactions", [])[-HISTORY:]
    return doc


class JsonBlob(Impl):
    name = "JSON blob RMW (flask-session style)"
    ops = ("log_interaction", "resume", "export")

    def prepare(self, ds: Dataset) -> None:
        self.reset(ds, everything=True)

    def reset(self, ds: Dataset, *, everything: bool = False) -> None:
        with redis.Redis.from_url(ds.url) as r:
            pipe = r.pipeline(transaction=False)
            groups = (ds.log, ds.read, ds.export) if everything else (ds.log,)
            for group in groups:
                for sid, uid in group:
                    pipe.set(BLOB_PREFIX + sid, _blob(sid, uid, ds.length), ex=TTL_S)
            pipe.execute()

    def sync(self, ds: Dataset) -> dict[str, SyncFn]:
        r = redis.Redis.from_url(ds.url)
        log, read, exp = ds.log, ds.read, ds.export

        def log_interaction(i: int) -> object:
            key = BLOB_PREFIX + log[i % len(log)][0]
            return r.set(key, _append(r.get(key)), ex=TTL_S)

        def resume(i: int) -> object:
            key = BLOB_PREFIX + read[i % len(read)][0]
            doc = _resumed(r.get(key))
            r.expire(key, TTL_S)  # connect-redis "touch": the sliding expiry
            return doc

        def export(i: int) -> object:
            raw = r.get(BLOB_PREFIX + exp[i % len(exp)][0])
            return orjson.loads(raw) if raw else None

        return {"log_interaction": log_interaction, "resume": resume, "export": export}

    async def aio(self, ds: Dataset) -> tuple[dict[str, AsyncFn], Callable[[], Awaitable[None]]]:
        r = redis.asyncio.Redis.from_url(ds.url)
        log, read, exp = ds.log, ds.read, ds.export

        async def log_interaction(i: int) -> object:
            key = BLOB_PREFIX + log[i % len(log)][0]
            return await r.set(key, _append(await r.get(key)), ex=TTL_S)

        async def resume(i: int) -> object:
            key = BLOB_PREFIX + read[i % len(read)][0]
            doc = _resumed(await r.get(key))
            await r.expire(key, TTL_S)
            return doc

        async def export(i: int) -> object:
            raw = await r.get(BLOB_PREFIX + exp[i % len(exp)][0])
            return orjson.loads(raw) if raw else None

        async def close() -> None:
            await r.aclose()

        fns: dict[str, AsyncFn] = {
            "log_interaction": log_interaction, "resume": resume, "export": export,
        }  # fmt: skip
        return fns, close


class LangChain(Impl):
    """One interaction is two messages (human, AI), added as the library adds them."""

    name = "langchain RedisChatMessageHistory"
    ops = ("log_interaction", "resume")

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("langchain_community") is None:
            return "langchain-community not installed (pip install -e '.[bench]')"
        return None

    def prepare(self, ds: Dataset) -> None:
        self.reset(ds, everything=True)

    def reset(self, ds: Dataset, *, everything: bool = False) -> None:
        messages = importlib.import_module("langchain_core.messages")
        AIMessage, HumanMessage = messages.AIMessage, messages.HumanMessage
        message_to_dict = messages.message_to_dict

        pair = [
            orjson.dumps(message_to_dict(HumanMessage(content=data.USER_MESSAGE))),
            orjson.dumps(message_to_dict(AIMessage(content=data.ASSISTANT_RESPONSE))),
        ]
        with redis.Redis.from_url(ds.url) as r:
            pipe = r.pipeline(transaction=False)
            for group in (ds.log, ds.read) if everything else (ds.log,):
                for sid, _ in group:
                    pipe.delete(LC_PREFIX + sid)
                    pipe.lpush(LC_PREFIX + sid, *(pair * ds.length))
                    pipe.expire(LC_PREFIX + sid, TTL_S)
            pipe.execute()

    def sync(self, ds: Dataset) -> dict[str, SyncFn]:
        history, turn, _ = _langchain_histories(ds)
        log, read = ds.log, ds.read

        def log_interaction(i: int) -> object:
            history(log[i % len(log)][0]).add_messages(list(turn))
            return None

        def resume(i: int) -> object:
            return history(read[i % len(read)][0]).messages[-2 * HISTORY :]

        return {"log_interaction": log_interaction, "resume": resume}

    async def aio(self, ds: Dataset) -> tuple[dict[str, AsyncFn], Callable[[], Awaitable[None]]]:
        # The class has no native asyncio I/O: its async methods run the sync ones in a thread.
        history, turn, shared = _langchain_histories(ds)
        log, read = ds.log, ds.read

        async def log_interaction(i: int) -> object:
            await history(log[i % len(log)][0]).aadd_messages(list(turn))
            return None

        async def resume(i: int) -> object:
            msgs = await history(read[i % len(read)][0]).aget_messages()
            return msgs[-2 * HISTORY :]

        async def close() -> None:
            shared.close()

        return {"log_interaction": log_interaction, "resume": resume}, close


def _langchain_histories(ds: Dataset) -> tuple[Callable[[str], Any], list[Any], redis.Redis]:
    """A history object per session id, all on one client; the two messages a turn adds."""
    RedisChatMessageHistory = _langchain_history()
    messages = importlib.import_module("langchain_core.messages")
    turn = [
        messages.HumanMessage(content=data.USER_MESSAGE),
        messages.AIMessage(content=data.ASSISTANT_RESPONSE),
    ]
    # The library builds a client per history object (connecting lazily); sharing one
    # keeps the connection count sane without changing the commands it sends.
    shared = redis.Redis.from_url(ds.url)
    histories: dict[str, Any] = {}

    def history(sid: str) -> Any:
        h = histories.get(sid)
        if h is None:
            h = histories[sid] = RedisChatMessageHistory(sid, url=ds.url, ttl=TTL_S)
            h.redis_client = shared  # one pool per process, not one per session
        return h

    return history, turn, shared


def _langchain_history() -> Any:
    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset; the peer is still
        # what many assistants run on, so it is measured all the same (see the notes).
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module("langchain_community.chat_message_histories")
    return module.RedisChatMessageHistory


def peers() -> list[type[Impl]]:
    return [JsonBlob, LangChain]
