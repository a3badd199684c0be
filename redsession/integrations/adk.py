"""redsession as Google ADK's session service: ``pip install redsession[adk]``.

    from google.adk.runners import Runner
    from redsession.integrations.adk import RedsessionSessionService

    service = RedsessionSessionService.from_url("redis://127.0.0.1:6379/0")
    runner = Runner(app_name="shop", agent=agent, session_service=service)

A thin adapter over AsyncSessionManager. ADK scopes a session by (app_name, user_id, id) and
lets two users reuse one id; the triple maps onto redsession deterministically:

- the session id is ``adk-`` + 32 url-safe characters of SHA-256 of the triple (no
  collision between two triples, whatever characters they hold);
- its owner is ``adk:<app>:<user>`` (each part as it is when it is a plain name of up to 64
  characters, else ``=`` + a hash of it), so listing an app's users is one range read of the
  users in name order;
- the triple itself is the session's scope, kept in its hash, so an export carries it.

State follows ADK's rules. Session state is the session's state fields, set with the event
that carries the delta in the same script; ``user:`` state is the owner's preferences, and
``app:`` state the preferences of the app's own id (``adk-app:<app>``), both one hash field
per key, so concurrent deltas to different keys never lose one another, and a ``None``
value removes its key (ADK's services store ``None``; a session key keeps it here too);
``temp:`` state is never stored. Appending an event is O(1) in the session's length (ADK's
own Redis service rewrites the whole session on every event), every read and write slides
the expiry, and all of a session's keys share one slot, so it runs on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events import Event
from google.adk.sessions import BaseSessionService, Session, State
from google.adk.sessions.base_session_service import GetSessionConfig, ListSessionsResponse
from google.genai import types
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from redsession.async_manager import AsyncSessionManager
from redsession.errors import SessionExists, SessionNotFound
from redsession.model.models import Interaction, Item
from redsession.model.models import Session as StoredSession

_PLAIN = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# The time of the last appended event (ADK's last_update_time), kept in the session state
# with the event that set it; never shown as ADK state.
_UPDATED = "redsession.adk.last_update_time"
_PAGE = 1000
_ALL = 1 << 40  # "every event": more than any history holds


def _digest(*parts: str) -> str:
    h = hashlib.sha256("\x00".join(f"{len(p)}:{p}" for p in parts).encode())
    return base64.urlsafe_b64encode(h.digest()).decode().rstrip("=")


def _name(part: str) -> str:
    # '=' is not in _PLAIN: a hashed name never equals a plain one.
    return part if _PLAIN.fullmatch(part) else "=" + _digest(part)[:26]


def session_key(app_name: str, user_id: str, session_id: str) -> str:
    """The redsession session id of an ADK (app, user, id)."""
    return "adk-" + _digest(app_name, user_id, session_id)[:32]


def owner_of(app_name: str, user_id: str) -> str:
    """The redsession user that owns an ADK user's sessions of one app."""
    return f"adk:{_name(app_name)}:{_name(user_id)}"


def app_owner(app_name: str) -> str:
    """The redsession user whose preferences hold an app's ``app:`` state."""
    return f"adk-app:{_name(app_name)}"


def _split(delta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(app, user, session) parts of a state delta, prefixes removed, ``temp:`` dropped."""
    app, user, own = {}, {}, {}
    for k, v in to_jsonable_python(delta, fallback=str).items():
        if k.startswith(State.APP_PREFIX):
            app[k.removeprefix(State.APP_PREFIX)] = v
        elif k.startswith(State.USER_PREFIX):
            user[k.removeprefix(State.USER_PREFIX)] = v
        elif not k.startswith(State.TEMP_PREFIX):
            own[k] = v
    return app, user, own


def _merged(own: dict[str, Any], app: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    state = {k: v for k, v in own.items() if k != _UPDATED}
    state.update({State.APP_PREFIX + k: v for k, v in app.items()})
    state.update({State.USER_PREFIX + k: v for k, v in user.items()})
    return state


def _events(entries: list[Interaction | Item]) -> list[Event]:
    """The history as ADK events: its own events as stored, anything else converted."""
    out: list[Event] = []
    for e in entries:
        at = e.timestamp.timestamp()
        if isinstance(e, Item):
            event = _own_event(e.item)
            if event is None:  # another framework's item: a chat message if it reads as one
                role, text = str(e.item.get("role", "user")), str(e.item.get("content", e.item))
                event = _message(e.id, role, text, at)
            out.append(event)
            continue
        out.append(_message(f"{e.id}-u", "user", e.user_message, at))
        if e.assistant_response is not None:
            out.append(_message(f"{e.id}-a", "assistant", e.assistant_response, at))
    return out


def _own_event(item: dict[str, Any]) -> Event | None:
    """An item this service stored (an Event's dump always holds these two), else None."""
    if "author" not in item or "invocation_id" not in item:
        return None
    try:
        return Event.model_validate(item)
    except ValidationError:
        return None


def _message(eid: str, role: str, text: str, at: float) -> Event:
    """A chat message written by other means (log_interaction, another framework)."""
    user = role == "user"
    content = types.Content(role="user" if user else "model", parts=[types.Part(text=text)])
    return Event(id=eid, author="user" if user else role, content=content, timestamp=at)


class RedsessionSessionService(BaseSessionService):
    """ADK sessions kept by redsession (see the module docstring for the mapping)."""

    def __init__(self, manager: AsyncSessionManager) -> None:
        self.manager = manager
        self._owned = False

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> RedsessionSessionService:
        """A service on its own manager (closed by ``close()``); ``settings`` are redsession's
        Settings (``session_ttl``, ``encryption_keys``, ...)."""
        service = cls(AsyncSessionManager.from_url(url, **settings))
        service._owned = True
        return service

    async def close(self) -> None:
        if self._owned:
            await self.manager.close()

    async def _shared(self, app_name: str, user_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The app's and the user's state; reading them keeps them alive (sliding TTL)."""
        app, user = await asyncio.gather(
            self.manager.get_preferences(app_owner(app_name), touch=True),
            self.manager.get_preferences(owner_of(app_name, user_id), touch=True),
        )
        return app, user

    async def _set_shared(
        self, app_name: str, user_id: str, app: dict[str, Any], user: dict[str, Any]
    ) -> None:
        writes = []
        if app:
            writes.append(self.manager.set_preferences(app_owner(app_name), app))
        if user:
            writes.append(self.manager.set_preferences(owner_of(app_name, user_id), user))
        await asyncio.gather(*writes)

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        # Ids are stripped on every call, as ADK's in-memory service does: " s1 " is "s1".
        sid = (session_id or "").strip() or str(uuid.uuid4())
        app, user, own = _split(state or {})
        scope = {"framework": "adk", "app": app_name, "user": user_id, "id": sid}
        now = datetime.now(timezone.utc).timestamp()
        try:
            # The session first: a duplicate id must not leave its app and user deltas.
            await self.manager.create_session(
                owner_of(app_name, user_id), session_id=session_key(app_name, user_id, sid),
                state={**own, _UPDATED: now}, scope=scope,
                reuse_deleted=True,  # as ADK's services do: an id deleted can be made again
            )  # fmt: skip
        except SessionExists as e:
            raise AlreadyExistsError(f"Session with id {sid} already exists.") from e
        await self._set_shared(app_name, user_id, app, user)
        shared_app, shared_user = await self._shared(app_name, user_id)
        return Session(
            id=sid, app_name=app_name, user_id=user_id,
            state=_merged(own, shared_app, shared_user), events=[], last_update_time=now,
        )  # fmt: skip

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        session_id = session_id.strip()
        key, owner = session_key(app_name, user_id, session_id), owner_of(app_name, user_id)
        n = None if config is None else config.num_recent_events
        after = None if config is None else config.after_timestamp
        try:
            if after is None:  # one script: the session, its newest events, a slid expiry
                stored = await self.manager.resume_session(
                    key, owner, history=_ALL if n is None else n
                )
                entries = list(stored.history)
            else:  # events are stored at their own times: the read is O(what it returns)
                stored = await self.manager.resume_session(key, owner, history=0)
                since = datetime.fromtimestamp(after, timezone.utc)
                entries = (
                    [] if n == 0 else await self.manager.history_since(key, since, user_id=owner)
                )
        except SessionNotFound:
            return None
        events = _events(entries)
        if after is not None:  # an event's own time (one written by other means: its record's)
            events = [e for e in events if e.timestamp >= after]
        if n is not None:
            events = events[len(events) - n :] if n else []
        return await self._session(stored, app_name, user_id, session_id, events)

    async def _session(
        self, stored: StoredSession, app_name: str, user_id: str, sid: str, events: list[Event]
    ) -> Session:
        app, user = await self._shared(app_name, user_id)
        updated = stored.state.get(_UPDATED, stored.created_at.timestamp())
        return Session(
            id=sid, app_name=app_name, user_id=user_id,
            state=_merged(stored.state, app, user), events=events, last_update_time=updated,
        )  # fmt: skip

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """An app's sessions of one user, or of all its users; without events, with state;
        oldest last update first. O(the app's users + their sessions)."""
        owners = [owner_of(app_name, user_id)] if user_id is not None else []
        if user_id is None:
            cursor: str | None = None
            while True:
                page = await self.manager.list_users(
                    f"adk:{_name(app_name)}:", limit=_PAGE, cursor=cursor
                )
                owners += page.users
                if (cursor := page.next_cursor) is None:
                    break
        keys = [s for o in owners for s in await self._session_ids(o)]
        stored = await asyncio.gather(*(self._stored(k) for k in keys))
        found = [s for s in stored if s is not None and (s.scope or {}).get("app") == app_name]
        sessions = [
            await self._session(s, app_name, s.scope["user"], s.scope["id"], [])
            for s in found
            if s.scope is not None
        ]
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    async def _session_ids(self, owner: str) -> list[str]:
        out, cursor = [], None
        while True:
            page = await self.manager.list_active_sessions(owner, limit=_PAGE, cursor=cursor)
            out += [s.session_id for s in page.sessions]
            if (cursor := page.next_cursor) is None:
                return out

    async def _stored(self, key: str) -> StoredSession | None:
        try:
            return await self.manager.get_session(key)
        except SessionNotFound:  # gone between the listing and the read
            return None

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        session_id = session_id.strip()
        key, owner = session_key(app_name, user_id, session_id), owner_of(app_name, user_id)
        try:
            await self.manager.delete_session(key, user_id=owner)
        except SessionNotFound:
            return

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        return await self.manager.get_preferences(owner_of(app_name, user_id), touch=True)

    async def append_event(self, session: Session, event: Event) -> Event:
        """Store the event and its state delta (session keys in the same script as the
        event; ``app:`` and ``user:`` keys one field each, right after), then apply it to
        ``session`` as ADK's base service does."""
        if event.partial:
            return event
        app, user, own = _split(event.actions.state_delta if event.actions else {})
        item = event.model_dump(mode="json", exclude_none=True)
        item["actions"] = {**item.get("actions", {}), "state_delta": {
            k: v for k, v in (item.get("actions") or {}).get("state_delta", {}).items()
            if not k.startswith(State.TEMP_PREFIX)
        }}  # fmt: skip
        key = session_key(session.app_name, session.user_id, session.id)
        owner = owner_of(session.app_name, session.user_id)
        ids = [event.id] if _ENTRY_ID.fullmatch(event.id or "") else None
        try:
            await self.manager.append_items(
                key, [item], user_id=owner, ids=ids, state={**own, _UPDATED: event.timestamp},
                times=[datetime.fromtimestamp(event.timestamp, timezone.utc)],  # its own time
            )  # fmt: skip
        except SessionNotFound as e:
            raise SessionNotFoundError(f"Session {session.id} not found.") from e
        await self._set_shared(session.app_name, session.user_id, app, user)
        event = await super().append_event(session, event)
        for prefix, part in ((State.APP_PREFIX, app), (State.USER_PREFIX, user)):
            for k in (k for k, v in part.items() if v is None):  # removed: see the docstring
                session.state.pop(prefix + k, None)
        session.last_update_time = event.timestamp
        return event
