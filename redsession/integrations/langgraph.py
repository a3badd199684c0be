"""redsession as LangGraph's checkpointer: ``pip install redsession[langgraph]``.

    from redsession import AsyncSessionManager
    from redsession.integrations.langgraph import RedsessionSaver

    saver = RedsessionSaver(AsyncSessionManager.from_url("redis://127.0.0.1:6379/0"))
    graph = builder.compile(checkpointer=saver)
    await graph.ainvoke(inputs, {"configurable": {"thread_id": session_id}})

A thin adapter over AsyncSessionManager's checkpoint operations (core/checkpoints.py). A
thread is a redsession session: the thread id is the session id when it is a valid one (so
an app can run a graph on a session it created), else ``lg-`` + 32 url-safe characters of
its SHA-256. Checkpoints, blobs and pending writes live in the session's side keys, in its
slot and on its TTL, and go with it into exports, dumps and restores; they are sealed when
encryption is on. A session the saver creates belongs to ``config["configurable"]
["user_id"]`` when that is a valid user id, else to the saver's ``owner`` (``langgraph``),
and its scope records the thread id. Plain Redis 7, Valkey and Cluster: no modules, no SCAN.

Each write is one script, O(its own size); ``aget_tuple`` is one script and one HMGET of the
blobs, O(log n) in the thread's checkpoints; ``alist`` reads pages of the index newest first.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import re
import struct
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from redsession.async_manager import AsyncSessionManager
from redsession.errors import SessionNotFound
from redsession.storage.checkpoints import Row

T = TypeVar("T")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_USER_ID = re.compile(r"[A-Za-z0-9_.@+=:-]{1,256}")
_PAGE = 100  # checkpoints read per round trip when listing
_EMPTY = "empty"  # the blob type of a channel that has no value at that version


def session_for(thread_id: str) -> str:
    """The redsession session id of a LangGraph thread (deterministic)."""
    if _SESSION_ID.fullmatch(thread_id):
        return thread_id
    digest = hashlib.sha256(thread_id.encode()).digest()
    return "lg-" + base64.urlsafe_b64encode(digest).decode()[:32]


def _pack(*parts: bytes) -> bytes:
    """Parts with a 4-byte length before each, so that any bytes round-trip."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _unpack(data: bytes) -> list[bytes]:
    parts, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from(">I", data, at)
        parts.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return parts


class RedsessionSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpoint saver whose threads are redsession sessions."""

    def __init__(
        self,
        manager: AsyncSessionManager,
        *,
        serde: SerializerProtocol | None = None,
        owner: str = "langgraph",
    ) -> None:
        super().__init__(serde=serde)
        self.manager = manager
        self.owner = owner
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    # -- mapping -----------------------------------------------------------------------

    def _creator(self, config: RunnableConfig) -> tuple[str, dict[str, str]]:
        conf = config.get("configurable", {})
        uid = conf.get("user_id")
        owner = uid if isinstance(uid, str) and _USER_ID.fullmatch(uid) else self.owner
        return owner, {"framework": "langgraph", "thread_id": str(conf["thread_id"])}

    def _typed(self, value: Any) -> tuple[bytes, bytes]:
        kind, data = self.serde.dumps_typed(value)
        return kind.encode(), data

    def _loads(self, kind: bytes, data: bytes) -> Any:
        return self.serde.loads_typed((kind.decode(), data))

    async def _tuple(
        self, thread_id: str, row: Row, config: RunnableConfig | None
    ) -> CheckpointTuple:
        ckind, cdata, mkind, mdata, parent = _unpack(row.payload)
        checkpoint = cast(Checkpoint, self._loads(ckind, cdata))
        versions = checkpoint["channel_versions"]
        names = [(ch, str(v)) for ch, v in versions.items()]
        blobs = await self.manager.get_checkpoint_blobs(session_for(thread_id), row.ns, names)
        values = {}
        for (ch, _), blob in zip(names, blobs):
            if blob is not None:
                kind, data = _unpack(blob)
                if kind.decode() != _EMPTY:
                    values[ch] = self._loads(kind, data)
        writes = []
        for _, w in row.writes:
            task_id, channel, kind, data, task_path, idx = _unpack(w)
            writes.append((task_path.decode(), task_id.decode(), int(idx), channel.decode(),
                           kind, data))  # fmt: skip
        writes.sort(key=lambda w: writes_sort_key(w[0], w[1], w[2]))

        def at(cid: str) -> RunnableConfig:
            ids = {"thread_id": thread_id, "checkpoint_ns": row.ns, "checkpoint_id": cid}
            return {"configurable": ids}

        return CheckpointTuple(
            config=config or at(row.checkpoint_id),
            checkpoint={**checkpoint, "channel_values": values},
            metadata=cast(CheckpointMetadata, self._loads(mkind, mdata)),
            parent_config=at(parent.decode()) if parent else None,
            pending_writes=[(w[1], w[3], self._loads(w[4], w[5])) for w in writes],
        )

    # -- the async API -----------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        cid = get_checkpoint_id(config)
        row = await self.manager.get_checkpoint(session_for(thread_id), ns, cid)
        if row is None:
            return None
        return await self._tuple(thread_id, row, config if cid else None)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if limit is not None and limit <= 0:
            return
        before_id = get_checkpoint_id(before) if before else None
        if config is None:  # every thread: a walk over all sessions, as a listing must
            threads = [t async for t in self._threads()]
            ns, only = None, None
        else:
            conf = config["configurable"]
            threads = [str(conf["thread_id"])]
            ns, only = conf.get("checkpoint_ns"), get_checkpoint_id(config)
        left = limit
        for thread_id in threads:
            async for tup in self._list(thread_id, ns, only, before_id, filter):
                yield tup
                if left is not None:
                    left -= 1
                    if left <= 0:
                        return

    async def _list(
        self, thread_id: str, ns: str | None, only: str | None, before: str | None,
        filter: dict[str, Any] | None,
    ) -> AsyncIterator[CheckpointTuple]:  # fmt: skip
        sid = session_for(thread_id)
        if only is not None and ns is not None:  # one checkpoint
            row = await self.manager.get_checkpoint(sid, ns, only)
            if row is not None and (before is None or only < before):
                tup = await self._tuple(thread_id, row, None)
                if _matches(tup, filter):
                    yield tup
            return
        resume: bytes | None = None
        while True:
            rows, resume = await self.manager.list_checkpoints(
                sid, ns, before=before, resume=resume, count=_PAGE
            )
            for row in rows:
                if only is not None and row.checkpoint_id != only:
                    continue
                tup = await self._tuple(thread_id, row, None)
                if _matches(tup, filter):
                    yield tup
            if resume is None:
                return

    async def _threads(self) -> AsyncIterator[str]:
        async for sid in self.manager.iter_session_ids():
            try:
                scope = (await self.manager.get_session(sid, history=0)).scope
            except SessionNotFound:  # gone since the walk saw it
                continue
            if scope and scope.get("framework") == "langgraph" and "thread_id" in scope:
                yield scope["thread_id"]
            else:
                yield sid

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        c = checkpoint.copy()
        values: dict[str, Any] = c.pop("channel_values")  # type: ignore[misc]
        blobs = [
            (ch, str(v), _pack(*self._typed(values[ch])) if ch in values else _pack(b"empty", b""))
            for ch, v in new_versions.items()
        ]
        parent = conf.get("checkpoint_id") or ""
        payload = _pack(
            *self._typed(c), *self._typed(get_checkpoint_metadata(config, metadata)),
            parent.encode(),
        )  # fmt: skip
        owner, scope = self._creator(config)
        await self.manager.put_checkpoint(
            session_for(thread_id), ns, checkpoint["id"], payload, blobs,
            create_for=owner, scope=scope,
        )  # fmt: skip
        return {
            "configurable": {
                "thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]
            }
        }  # fmt: skip

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        stored = []
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            kind, data = self._typed(value)
            packed = _pack(task_id.encode(), channel.encode(), kind, data, task_path.encode(),
                           str(idx).encode())  # fmt: skip
            # A special write (error, interrupt, ...) replaces its earlier self; a regular
            # one is recorded once: a task's retry keeps its first writes.
            stored.append((f"{task_id}:{idx}", packed, idx < 0))
        owner, scope = self._creator(config)
        await self.manager.put_checkpoint_writes(
            session_for(thread_id), ns, conf["checkpoint_id"], stored,
            create_for=owner, scope=scope,
        )  # fmt: skip

    async def adelete_thread(self, thread_id: str) -> None:
        await self.manager.clear_checkpoints(session_for(str(thread_id)))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        scope = {"framework": "langgraph", "thread_id": str(target_thread_id)}
        await self.manager.copy_checkpoints(
            session_for(str(source_thread_id)), session_for(str(target_thread_id)),
            create_for=self.owner, scope=scope,
        )  # fmt: skip

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as strings that sort as they grow: a zero-padded counter and a random
        fraction (two writers of one version still differ)."""
        n = 0 if current is None else int(str(current).split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # -- the sync API: the async one, run on the saver's own event loop thread (one for
    # the saver, started on first use; close() stops it). The manager must be able to work
    # from that loop: AsyncSessionManager.from_url makes one that can. ---------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="redsession-langgraph", daemon=True
                ).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Stop the sync API's event loop thread, closing the manager's client on it."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.manager.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        while loop.is_running():  # stops at its next turn
            threading.Event().wait(0.001)
        loop.close()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._run(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self.adelete_thread(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self.acopy_thread(source_thread_id, target_thread_id))


def _matches(tup: CheckpointTuple, filter: dict[str, Any] | None) -> bool:
    if not filter:
        return True
    metadata = cast(dict[str, Any], tup.metadata)
    return all(metadata.get(k) == v for k, v in filter.items())
