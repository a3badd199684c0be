"""redsession as the OpenAI Agents SDK's session backend: ``pip install redsession[openai-agents]``.

    from agents import Agent, Runner
    from redsession.integrations.openai_agents import RedsessionSession

    session = RedsessionSession.from_url("conv-1", "redis://127.0.0.1:6379/0", user_id="alice")
    result = await Runner.run(agent, "Hello", session=session)

A thin adapter: each method is one AsyncSessionManager call. The SDK's items go into the
session's one history beside interactions logged by other means (an interaction reads as two
items, the user's and the assistant's). A session that does not exist yet is created for
``user_id`` on its first write; one that belongs to another user raises PermissionDenied.
Session ids are redsession's (1-128 of ``A-Z a-z 0-9 _ -``), checked when the object is made.
Works from any event loop (``Runner.run_sync`` included) when the manager was made with
``AsyncSessionManager.from_url``: it keeps one Redis client per loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from agents.items import TResponseInputItem
from agents.memory.session import SessionABC
from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

from redsession.async_manager import AsyncSessionManager
from redsession.errors import (
    InvalidInput,
    PayloadTooLarge,
    PermissionDenied,
    SessionMerged,
    SessionNotFound,
)
from redsession.model import validation


class RedsessionSession(SessionABC):
    """An Agents SDK session kept by redsession: Lua-atomic appends, sliding expiry on reads
    and writes, tombstones, dumps, encryption at rest, Cluster and Sentinel."""

    def __init__(
        self,
        session_id: str,
        manager: AsyncSessionManager,
        *,
        user_id: str,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        # Checked here, where the mistake is made (InvalidSessionId, a ValueError), not on
        # the first call, where add_items would have reported it as an item's TypeError.
        self.session_id = validation.session_id(session_id)
        self.manager = manager
        self.user_id = validation.user_id(user_id)
        # As the SDK's own sessions do: a dict is coerced (unknown keys raise TypeError).
        self.session_settings = (
            SessionSettings()
            if session_settings is None
            else coerce_session_settings(dict(session_settings))
            if isinstance(session_settings, Mapping)
            else coerce_session_settings(session_settings)
        )
        self._owned = False

    @classmethod
    def from_url(
        cls,
        session_id: str,
        url: str | None = None,
        *,
        user_id: str,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> RedsessionSession:
        """A session on its own manager (closed by ``close()``); ``settings`` are redsession's
        Settings (e.g. ``session_ttl``, ``encryption_keys``)."""
        session = cls(
            session_id,
            AsyncSessionManager.from_url(url, **settings),
            user_id=user_id,
            session_settings=session_settings,
        )
        session._owned = True
        return session

    async def get_items(
        self, limit: int | None = None, *, wrapper: Any = None
    ) -> list[TResponseInputItem]:
        """The newest ``limit`` items (the session settings' limit when None; all when both
        are None; none for 0 or less), oldest first. Counts as activity: expiry slides."""
        n = resolve_session_limit(limit, self.session_settings)
        try:
            items = await self.manager.get_items(self.session_id, limit=n, user_id=self.user_id)
        except SessionNotFound as e:
            _raise_unless_missing(e)
            return []
        return items  # type: ignore[return-value]  # the items as the SDK added them

    async def add_items(self, items: list[TResponseInputItem], *, wrapper: Any = None) -> None:
        """Append the items in one atomic step, creating the session on its first write."""
        if not items:
            return
        try:
            await self.manager.append_items(
                self.session_id,
                items,
                user_id=self.user_id,
                create_for=self.user_id,
            )
        except InvalidInput as e:
            _raise_for_items(e)

    async def pop_item(self, *, wrapper: Any = None) -> TResponseInputItem | None:
        """Remove and return the newest item; None when there is none."""
        try:
            item = await self.manager.pop_item(self.session_id, user_id=self.user_id)
        except SessionNotFound as e:
            _raise_unless_missing(e)
            return None
        return item  # type: ignore[return-value]

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Remove every item; the session itself (its context, its owner) stays."""
        try:
            await self.manager.clear_history(self.session_id, user_id=self.user_id)
        except SessionNotFound as e:
            _raise_unless_missing(e)

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """The compaction hook: the whole history becomes ``items`` in one step."""
        try:
            await self.manager.replace_history(self.session_id, items, user_id=self.user_id)
        except InvalidInput as e:
            _raise_for_items(e)
        except SessionNotFound as e:
            _raise_unless_missing(e)
            await self.add_items(items)  # a session compacted before its first write
        return True

    async def close(self) -> None:
        """Close the manager if ``from_url`` made it (a shared one is the caller's to close)."""
        if self._owned:
            await self.manager.close()


def _raise_for_items(e: InvalidInput) -> NoReturn:
    """Items that are not JSON raise TypeError, as json.dumps does in the SDK's own sessions;
    a size limit (PayloadTooLarge) is not a type error and keeps its own (ValueError) type."""
    if isinstance(e, PayloadTooLarge):
        raise e
    raise TypeError(str(e)) from e


def _raise_unless_missing(e: SessionNotFound) -> None:
    """A session that is not there reads as empty; another user's, or a merged one that
    refuses writes, is an error the caller must see."""
    if isinstance(e, (PermissionDenied, SessionMerged)):
        raise e
