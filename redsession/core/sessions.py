"""Session lifecycle, context and preferences: create, resume, read, delete, patch, list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from redsession.core.base import Core
from redsession.errors import ConcurrentModification, InvalidInput, SessionNotFound
from redsession.model import validation as check
from redsession.model.codec import (
    loads,
    record_from_hash,
    scope_field,
    session_from_hash,
    state_fields,
    summary_from_row,
)
from redsession.model.contexts import apply_patch
from redsession.model.models import Session, SessionPage, from_us
from redsession.storage.commands import Op
from redsession.storage.walk import IndexWalk


def create_session(
    core: Core, user_id: str, context: Mapping[str, Any] | None, session_id: str | None,
    state: Mapping[str, Any] | None = None, scope: Mapping[str, str] | None = None,
    reuse_deleted: bool = False, op_id: str | None = None,
) -> Op[Session]:  # fmt: skip
    uid = check.user_id(user_id)
    op = core.op(op_id)
    if session_id is not None:
        sid = check.session_id(session_id)
    else:  # the caller's operation id, repeated, must name the same new session
        sid = check.new_session_id() if op_id is None else check.session_id_for_op(uid, op)
    ctx = {} if context is None else context
    data = core.cipher.seal(core.json(ctx, "context"))
    st, sc = checked_state(core, state), checked_scope(core, scope)
    t = core.stamp(op=op)
    fields = state_fields(st, core.cipher)
    if not isinstance(reuse_deleted, bool):
        raise InvalidInput(f"reuse_deleted must be a bool, not {check.show(reuse_deleted)}")
    created = yield from core.store.create(
        sid, uid, data, t.now, t, scope_field(sc), fields, reuse_deleted
    )
    return Session(
        session_id=sid, user_id=uid, total_interactions=0, created_at=from_us(created),
        last_activity=from_us(created), expires_at=from_us(created + core.ttl_us),
        context=dict(ctx), state=st, scope=sc,
    )  # fmt: skip


def checked_state(core: Core, state: Mapping[str, Any] | None) -> dict[str, Any]:
    """Session state to set: a JSON object within the context limits."""
    if state is None:
        return {}
    core.json(state, "state")
    return dict(state)


def checked_scope(core: Core, scope: Mapping[str, str] | None) -> dict[str, str] | None:
    """A framework's scope for a new session: an object of strings."""
    if scope is None:
        return None
    core.json(scope, "scope")
    if not all(isinstance(v, str) for v in scope.values()):
        raise InvalidInput("scope values must be strings")
    return dict(scope)


def resume_session(core: Core, session_id: str, user_id: str, history: int | None) -> Op[Session]:
    sid, uid = check.session_id(session_id), check.user_id(user_id)
    n = core.settings.resume_history if history is None else check.integer(history, "history")
    n = max(0, n)
    return (yield from core.follow(sid, lambda s: _fetch(core, s, uid, touch=True, history=n)))


def create_or_resume_session(core: Core, user_id: str, session_id: str | None) -> Op[str]:
    uid = check.user_id(user_id)
    if session_id is not None:
        try:
            s = yield from resume_session(core, session_id, uid, 0)
            return s.session_id
        except SessionNotFound:  # expired, deleted, or someone else's: start afresh
            pass
    created = yield from create_session(core, uid, None, None)
    return created.session_id


def get_session(
    core: Core, session_id: str, history: int, user_id: str | None, follow_merged: bool = True
) -> Op[Session]:
    sid, owner = check.session_id(session_id), core.owner(user_id)
    n = max(0, check.integer(history, "history"))
    read = lambda s: _fetch(core, s, owner, touch=False, history=n)  # noqa: E731
    return (yield from core.follow(sid, read, follow_merged))


def _fetch(core: Core, sid: str, owner: str | None, *, touch: bool, history: int) -> Op[Session]:
    h, raw = yield from core.store.fetch(sid, owner, core.stamp(), touch=touch, history=history)
    return session_from_hash(sid, h, raw, core.cipher)


def delete_session(
    core: Core, session_id: str, user_id: str | None, op_id: str | None = None
) -> Op[None]:
    sid, owner = check.session_id(session_id), core.owner(user_id)
    yield from core.store.delete(sid, owner, core.stamp(op=core.op(op_id)))


def update_context(
    core: Core, session_id: str, patch: Mapping[str, Any], user_id: str | None,
    op_id: str | None = None,
) -> Op[Session]:  # fmt: skip
    sid, owner = check.session_id(session_id), core.owner(user_id)
    core.json(patch, "context patch")
    op = core.op(op_id)
    for _ in range(core.settings.max_update_retries):
        t = core.stamp(op=op)
        h, _ = yield from core.store.fetch(sid, owner, t, touch=False, history=0)
        current = record_from_hash(sid, h, core.cipher)
        context = apply_patch(current.context, patch)
        data = core.cipher.seal(core.json(context, "context"))
        if (yield from core.store.update_context(sid, owner, current.version, data, t)):
            return Session(
                **current.model_dump(exclude={"context", "version", "last_activity"}),
                context=context, version=current.version + 1,
                last_activity=from_us(t.activity), expires_at=from_us(t.expires),
            )  # fmt: skip
    raise ConcurrentModification(
        f"context of {sid!r} kept changing under {core.settings.max_update_retries} attempts"
    )


# -- preferences -----------------------------------------------------------------------------


def set_preferences(
    core: Core, user_id: str, prefs: Mapping[str, Any], op_id: str | None = None
) -> Op[dict[str, Any]]:
    """Shallow merge into the user's preferences; a None value removes that key."""
    uid = check.user_id(user_id)
    core.json(prefs, "preferences")
    values = {k: core.cipher.seal(orjson.dumps(v)) for k, v in prefs.items() if v is not None}
    remove = [k for k, v in prefs.items() if v is None]
    yield from core.store.set_prefs(uid, values, remove, core.stamp(op=core.op(op_id)))
    return (yield from get_preferences(core, uid))


def get_preferences(core: Core, user_id: str, touch: bool = False) -> Op[dict[str, Any]]:
    """The user's preferences; ``touch`` counts the read as activity (their TTL slides)."""
    uid = check.user_id(user_id)
    raw = yield from core.store.get_prefs(uid, touch)
    return {k: loads(core.cipher.open(v, "a preference"), "preference") for k, v in raw.items()}


# -- listing ---------------------------------------------------------------------------------


def list_active_sessions(
    core: Core, user_id: str | None, limit: int, cursor: str | None
) -> Op[SessionPage]:
    uid = core.owner(user_id)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidInput(f"limit must be an integer from 1 to 10000, not {check.show(limit)}")
    offset = 0
    if cursor is not None:
        if not isinstance(cursor, str) or not cursor.isdigit() or len(cursor) > 12:
            raise InvalidInput(f"invalid cursor {check.show(cursor)}: pass back a next_cursor")
        offset = int(cursor)
    ids, rows = yield from core.store.page_summaries(uid, offset, limit)
    items = [
        summary_from_row(sid, r) for sid, r in zip(ids, rows) if sid is not None and r is not None
    ]
    more = len(ids) == limit
    return SessionPage(sessions=items, next_cursor=str(offset + limit) if more else None)


def list_users(
    core: Core, prefix: str, limit: int, cursor: str | None
) -> Op[tuple[list[str], str | None]]:
    """Users with a live session whose id starts with ``prefix``, in name order, a page at a
    time: (ids, the cursor of the next page or None). O(log users + page)."""
    if not isinstance(prefix, str) or (prefix and not check.USER_ID.fullmatch(prefix)):
        raise InvalidInput(f"invalid user id prefix {check.show(prefix)}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidInput(f"limit must be an integer from 1 to 10000, not {check.show(limit)}")
    after = None if cursor is None else check.user_id(cursor)
    if after is not None and not after.startswith(prefix):
        raise InvalidInput(f"invalid cursor {check.show(cursor)}: pass back a next_cursor")
    users = yield from core.store.users_by_name(prefix, after, limit)
    return users, users[-1] if len(users) == limit else None


def session_walk(core: Core, user_id: str | None) -> IndexWalk:
    """Every session id (of one user, or all), each once, oldest activity first."""
    uid = core.owner(user_id)
    keys = core.store.keys
    return IndexWalk(core.store, keys.sessions if uid is None else keys.user_sessions(uid))


def user_walk(core: Core) -> IndexWalk:
    """Every user with a live session, each once, oldest activity first."""
    return IndexWalk(core.store, core.store.keys.users)
