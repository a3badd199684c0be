"""redsession as pydantic-ai's conversation store: ``pip install redsession[pydantic-ai]``.

    from pydantic_ai.conversation import Conversation
    from redsession.integrations.pydantic_ai import RedsessionConversationStore

    store = RedsessionConversationStore.from_url("redis://127.0.0.1:6379/0")
    conversation = await store.load(cid) or Conversation(conversation_id=cid)
    result = await agent.run("Hello", conversation=conversation)
    await store.save(result)

A thin adapter over AsyncSessionManager. A conversation is a redsession session, so owner,
sliding expiry, tombstones, export, dumps, restore and encryption apply to it unchanged:

- its session id is ``pai-`` + the conversation id when that is a plain id of up to 124
  characters of ``A-Z a-z 0-9 _ -`` (uuid7s are), else ``pai_`` + a SHA-256 digest of it;
- its owner is ``pai:<scope>`` (``=`` + a digest when the scope is not a plain name), or
  ``pai`` for a conversation without a scope, so listing a scope is listing a user;
- its entries are history items stored under their entry ids, each holding the entry (id,
  parent id, kind, the message as pydantic-ai serializes it): the parent links make the log
  a tree, so branches live side by side in one history;
- its record (head, usage, deferred tool requests, fork origin, branches) is one session
  state key, written by the same script as the entries; the revision is the session's
  ``revision`` field, checked and set by that script too (one round trip, atomic);
- ``updated_at`` is the session's last activity: the time of its last write.

A fork copies the history it keeps into the new conversation's session (once, O(that
history)), so that every conversation is whole in its own session: it expires, exports,
restores and is deleted alone, and deleting the conversation it came from loses nothing.
``delete_record`` therefore deletes all of a conversation's entries with it.

Entries are found by id within their conversation's session (``AsyncSessionManager.get_entry``,
O(entries newer than it)). ``read_entry`` and ``read_history`` are given only an entry id,
so the store remembers which conversation holds each entry it has read or written (up to
``remembered`` of them, the oldest forgotten first); an entry of a conversation it has not
read raises KeyError, as an unknown id does. Load the conversation (``load_entries``) first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessagesTypeAdapter

from redsession.async_manager import AsyncSessionManager
from redsession.errors import InvalidInput, RevisionConflict, SessionNotFound
from redsession.model.models import Item, Session

__all__ = ("RedsessionConversationStore", "owner_of", "session_key")

_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,124}")
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_PREFIXES = ("pai-", "pai_")
_RECORD = "pydantic_ai.record"  # the session state key that holds the record
_FRAMEWORK = "pydantic-ai"
_MARK = "pydantic_ai"  # in each entry's item: what it is
_PAGE = 100
_RECORDS: TypeAdapter[ConversationRecord] = TypeAdapter(ConversationRecord)
# What the session keeps elsewhere than the record's state key.
_KEPT_ELSEWHERE = ("conversation_id", "scope", "revision", "updated_at")


def _digest(text: str) -> str:
    h = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(h).decode().rstrip("=")[:32]


def session_key(conversation_id: str) -> str:
    """The redsession session id of a conversation."""
    if _PLAIN_ID.fullmatch(conversation_id):
        return "pai-" + conversation_id
    return "pai_" + _digest(conversation_id)


def owner_of(scope: str | None) -> str:
    """The redsession user that owns a scope's conversations."""
    if scope is None:
        return "pai"
    return "pai:" + (scope if _PLAIN_NAME.fullmatch(scope) else "=" + _digest(scope))


def _item_id(entry_id: str) -> str:
    # The item keeps the entry's own id; a read checks it, so a digest never stands for another.
    return entry_id if _ENTRY_ID.fullmatch(entry_id) else "h-" + _digest(entry_id)


def _item(entry: ConversationEntry) -> dict[str, Any]:
    message = ModelMessagesTypeAdapter.dump_python([entry.message], mode="json")[0]
    return {
        _MARK: "entry", "id": entry.id, "parent_id": entry.parent_id, "kind": entry.kind,
        "message": message,
    }  # fmt: skip


def _entries_of(items: Sequence[dict[str, Any]]) -> list[ConversationEntry]:
    """The entries the items hold (see _item), their messages validated in one call."""
    try:
        messages = ModelMessagesTypeAdapter.validate_python([i["message"] for i in items])
        return [
            ConversationEntry(id=i["id"], parent_id=i["parent_id"], kind=i["kind"], message=m)
            for i, m in zip(items, messages)
        ]
    except (KeyError, ValueError) as e:  # ValidationError is a ValueError
        raise UserError(f"an entry in the store is malformed: {e}") from e


def _record_of(session: Session) -> ConversationRecord | None:
    """The conversation record a session holds; None for a session that is not one."""
    state, scope = session.state.get(_RECORD), session.scope or {}
    if not isinstance(state, dict) or scope.get("framework") != _FRAMEWORK:
        return None
    try:
        return _RECORDS.validate_python({
            **state, "conversation_id": scope["conversation_id"], "scope": scope.get("scope"),
            "revision": session.revision, "updated_at": session.last_activity,
        })  # fmt: skip
    except (KeyError, ValidationError) as e:
        raise UserError(f"conversation in session {session.session_id!r} is malformed: {e}") from e


def _record_state(record: ConversationRecord) -> dict[str, Any]:
    data = _RECORDS.dump_python(record, mode="json")
    return {k: v for k, v in data.items() if k not in _KEPT_ELSEWHERE}


def _scope_of(record: ConversationRecord) -> dict[str, str]:
    scope = {"framework": _FRAMEWORK, "conversation_id": record.conversation_id}
    if record.scope is not None:
        scope["scope"] = record.scope
    return scope


class RedsessionConversationStore(ConversationStore):
    """pydantic-ai's ConversationStore on redsession: each conversation a session, its
    entries that session's history, every save one atomic, revision-checked script."""

    def __init__(self, manager: AsyncSessionManager, *, remembered: int = 100_000) -> None:
        self.manager = manager
        self._remembered = remembered
        self._where: OrderedDict[str, str] = OrderedDict()  # entry id -> session id
        self._owned = False

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> RedsessionConversationStore:
        """A store on its own manager (closed by ``close()``); ``settings`` are redsession's."""
        store = cls(AsyncSessionManager.from_url(url, **settings))
        store._owned = True
        return store

    async def close(self) -> None:
        """Close the manager if ``from_url`` made it (a shared one is the caller's to close)."""
        if self._owned:
            await self.manager.close()

    def _remember(self, sid: str, entry_ids: Sequence[str | None]) -> None:
        for eid in entry_ids:
            if eid is not None:
                self._where[eid] = sid
                self._where.move_to_end(eid)
        while len(self._where) > self._remembered:
            self._where.popitem(last=False)

    # -- records ---------------------------------------------------------------------------

    async def _read_session(self, sid: str, slide: bool = True) -> ConversationRecord | None:
        """The record of a session; ``slide``: the read keeps the conversation alive (a
        listing's does not)."""
        try:
            session = await self.manager.get_session(sid, follow_merged=False, slide=slide)
        except SessionNotFound:
            return None
        record = _record_of(session)
        if record is not None:
            self._remember(sid, [record.head_id, record.forked_at, *record.branches])
        return record

    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        return await self._read_session(session_key(conversation_id))

    async def read_records(
        self, *, scope: str | None = None, limit: int | None = None
    ) -> Sequence[ConversationRecord]:
        """Newest ``updated_at`` first: the owner's sessions (all sessions without a scope)
        by last activity, a page at a time, keeping the conversations among them."""
        if limit is not None and limit < 0:
            raise UserError("`limit` must not be negative.")
        owner = None if scope is None else owner_of(scope)
        found: list[ConversationRecord] = []
        cursor: str | None = None
        while limit is None or len(found) < limit:
            page = await self.manager.list_active_sessions(owner, limit=_PAGE, cursor=cursor)
            sids = [s.session_id for s in page.sessions if s.session_id.startswith(_PREFIXES)]
            for record in await asyncio.gather(*(self._read_session(s, slide=False) for s in sids)):
                if record is not None and (scope is None or record.scope == scope):
                    found.append(record)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        # A session written between the listing and its read has moved up: order by the times read.
        found.sort(key=lambda r: r.updated_at, reverse=True)
        return found if limit is None else found[:limit]

    async def write_record(
        self,
        record: ConversationRecord,
        *,
        new_entries: Sequence[ConversationEntry] = (),
        expected_revision: str | None,
    ) -> None:
        cid = record.conversation_id
        sid, owner = session_key(cid), owner_of(record.scope)
        entries = list(new_entries)
        new_ids = {e.id for e in entries}
        needed = {e.parent_id for e in entries if e.parent_id is not None} - new_ids
        if record.head_id is not None and record.head_id not in new_ids:
            needed.add(record.head_id)
        missing = await self._missing(sid, needed) if expected_revision is not None else needed
        if missing:
            # A fork's first write: the history it keeps comes from the conversation it forks.
            if expected_revision is not None or record.forked_from is None or len(missing) > 1:
                raise ConversationConflict(cid)
            (tip,) = missing
            try:
                kept = await self._chain(session_key(record.forked_from), tip, None)
            except KeyError as e:  # the conversation forked was deleted meanwhile
                raise ConversationConflict(cid) from e
            entries = kept + entries
        try:
            await self.manager.append_items(
                sid, [_item(e) for e in entries], ids=[_item_id(e.id) for e in entries],
                user_id=owner, create_for=owner, scope=_scope_of(record),
                state={_RECORD: _record_state(record)},
                revision=(expected_revision, record.revision),
            )  # fmt: skip
        except (RevisionConflict, SessionNotFound) as e:
            raise ConversationConflict(cid) from e
        except InvalidInput as e:
            raise UserError(f"conversation {cid!r} cannot be stored: {e}") from e
        self._remember(sid, [e.id for e in entries])

    async def _missing(self, sid: str, ids: set[str]) -> set[str]:
        """Those of ``ids`` that the session's history does not hold."""
        found = await asyncio.gather(*(self._find(sid, i) for i in ids))
        return {i for i, entry in zip(ids, found) if entry is None}

    async def _find(self, sid: str, entry_id: str) -> ConversationEntry | None:
        try:
            e = await self.manager.get_entry(sid, _item_id(entry_id))
        except SessionNotFound:
            return None
        if not isinstance(e, Item) or e.item.get(_MARK) != "entry" or e.item["id"] != entry_id:
            return None
        return _entries_of([e.item])[0]

    async def _chain(self, sid: str, tip: str, limit: int | None) -> list[ConversationEntry]:
        """The history up to ``tip`` in a session, oldest first, at most ``limit`` of it:
        records read from the log, then the parent links followed in memory (the log holds
        every branch). With a limit, the newest ``limit`` records first: enough when ``tip``
        is the newest entry and no branch is interleaved; else the whole log. KeyError when
        the session or the entry is gone."""
        try:
            if limit is not None:
                with contextlib.suppress(KeyError):  # the line goes back past those records
                    return _entries_of(_walk(await self._items(sid, limit), tip, limit))
            return _entries_of(_walk(await self._items(sid), tip, limit))
        except SessionNotFound as e:
            raise KeyError(tip) from e

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        """Delete the conversation's session, and every entry with it (a fork has its own
        copies); a tombstone keeps a late save from bringing it back."""
        try:
            await self.manager.delete_session(
                session_key(conversation_id), revision=expected_revision
            )
        except (RevisionConflict, SessionNotFound) as e:
            raise ConversationConflict(conversation_id) from e
        except InvalidInput as e:
            raise UserError(str(e)) from e

    # -- entries ---------------------------------------------------------------------------

    def _session_of(self, entry_id: str) -> str:
        sid = self._where.get(entry_id)
        if sid is None:
            raise KeyError(
                f"entry {entry_id!r} is not in a conversation this store has read; "
                "load the conversation first"
            )
        return sid

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        entry = await self._find(self._session_of(entry_id), entry_id)
        if entry is None:
            raise KeyError(entry_id)
        return entry

    async def _items(self, sid: str, newest: int | None = None) -> dict[str, dict[str, Any]]:
        """The entry items of a session's history (its ``newest`` records; None: all), by
        entry id: read as plain JSON, not validated (the line walked is, in one call)."""
        items = await self.manager.get_items(sid, limit=newest, touch=False)
        out = {i["id"]: i for i in items if i.get(_MARK) == "entry"}
        self._remember(sid, list(out))
        return out

    async def read_history(
        self, head_id: str | None, *, limit: int | None = None
    ) -> list[ConversationEntry]:
        """The history up to ``head_id`` (see _chain)."""
        if head_id is None:
            return []
        return await self._chain(self._session_of(head_id), head_id, limit)


def _walk(by_id: dict[str, dict[str, Any]], tip: str, limit: int | None) -> list[dict[str, Any]]:
    """From ``tip`` back along the parent links, at most ``limit``; oldest first."""
    line: list[dict[str, Any]] = []
    at: str | None = tip
    while at is not None and (limit is None or len(line) < limit):
        item = by_id.get(at)
        if item is None:
            raise KeyError(at)
        line.append(item)
        at = item["parent_id"]
        if len(line) > len(by_id):
            raise UserError(f"entry {tip!r}: its parent links make a loop")
    line.reverse()
    return line
