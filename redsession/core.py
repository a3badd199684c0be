"""The session operations, written once for both managers as generators over store commands.

Each method validates its input, decides policy, and composes ``Store`` operations with
``yield from``; SessionManager and AsyncSessionManager only choose how the commands run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from redsession import validation as check
from redsession.codec import (
    decode_interactions,
    encode_interaction,
    expires_from_hash,
    hash_fields,
    loads,
    record_from_hash,
    session_from_hash,
    summary_from_row,
)
from redsession.commands import Op
from redsession.config import Settings
from redsession.crypto import Cipher
from redsession.errors import (
    ConcurrentModification,
    InvalidInput,
    PayloadTooLarge,
    PermissionDenied,
    SessionMerged,
    SessionNotFound,
)
from redsession.index_walk import IndexWalk
from redsession.merge import apply_patch, combine, same_content
from redsession.models import (
    Interaction,
    Session,
    SessionExport,
    SessionPage,
    StoreStats,
    from_us,
    to_us,
    trusted,
    utcnow,
)
from redsession.store import Stamp, Store

T = TypeVar("T")
MAX_MERGE_HOPS = 16  # a merged id redirects to its primary, which may itself be merged
_DAY_US = 86_400_000_000


class SessionCore:
    """Validation, ids and policy of every session operation (sans-IO)."""

    def __init__(
        self, store: Store, settings: Settings, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._ttl_us = settings.session_ttl // timedelta(microseconds=1)
        self.cipher = Cipher([k.get_secret_value() for k in settings.encryption_keys])

    def stamp(self, activity: int | None = None) -> Stamp:
        now = to_us(self.clock())
        return Stamp(activity=now if activity is None else activity, expires=now + self._ttl_us,
                     now=now)  # fmt: skip

    def _json(self, value: object, what: str) -> bytes:
        s = self.settings
        return check.json_object(
            value, what, max_bytes=s.max_context_bytes, max_depth=s.max_json_depth
        )

    def _owner(self, user_id: str | None) -> str | None:
        return None if user_id is None else check.user_id(user_id)

    def _follow(self, sid: str, read: Callable[[str], Op[T]]) -> Op[T]:
        """Run a read, following merged ids to their primary."""
        for _ in range(MAX_MERGE_HOPS):
            try:
                return (yield from read(sid))
            except SessionMerged as m:
                sid = m.primary_id
        raise SessionNotFound(sid, f"session {sid!r}: merge chain longer than {MAX_MERGE_HOPS}")

    # -- lifecycle -----------------------------------------------------------------------

    def create_session(
        self, user_id: str, context: Mapping[str, Any] | None, session_id: str | None
    ) -> Op[Session]:
        uid = check.user_id(user_id)
        sid = check.new_session_id() if session_id is None else check.session_id(session_id)
        ctx = {} if context is None else context
        data = self.cipher.seal(self._json(ctx, "context"))
        t = self.stamp()
        yield from self.store.create(sid, uid, data, t.now, t)
        return Session(
            session_id=sid, user_id=uid, total_interactions=0, created_at=from_us(t.now),
            last_activity=from_us(t.now), expires_at=from_us(t.expires), context=dict(ctx),
        )  # fmt: skip

    def resume_session(self, session_id: str, user_id: str, history: int | None) -> Op[Session]:
        sid, uid = check.session_id(session_id), check.user_id(user_id)
        n = self.settings.resume_history if history is None else check.integer(history, "history")
        n = max(0, n)
        return (yield from self._follow(sid, lambda s: self._fetch(s, uid, touch=True, history=n)))

    def create_or_resume_session(self, user_id: str, session_id: str | None) -> Op[str]:
        uid = check.user_id(user_id)
        if session_id is not None:
            try:
                s = yield from self.resume_session(session_id, uid, 0)
                return s.session_id
            except SessionNotFound:  # expired, deleted, or someone else's: start afresh
                pass
        created = yield from self.create_session(uid, None, None)
        return created.session_id

    def get_session(self, session_id: str, history: int, user_id: str | None) -> Op[Session]:
        sid, owner = check.session_id(session_id), self._owner(user_id)
        n = max(0, check.integer(history, "history"))
        read = lambda s: self._fetch(s, owner, touch=False, history=n)  # noqa: E731
        return (yield from self._follow(sid, read))

    def _decode(self, raw: Sequence[bytes]) -> list[Interaction]:
        return decode_interactions(raw, self.cipher)

    def _fetch(self, sid: str, owner: str | None, *, touch: bool, history: int) -> Op[Session]:
        h, raw = yield from self.store.fetch(sid, owner, self.stamp(), touch=touch, history=history)
        return session_from_hash(sid, h, self._decode(raw), self.cipher)

    def delete_session(self, session_id: str, user_id: str | None) -> Op[None]:
        sid, owner = check.session_id(session_id), self._owner(user_id)
        yield from self.store.delete(sid, owner, "deleted", self.stamp())

    # -- history and context -------------------------------------------------------------

    def get_history(
        self, session_id: str, limit: int | None, before: int | None, user_id: str | None
    ) -> Op[list[Interaction]]:
        sid, owner = check.session_id(session_id), self._owner(user_id)
        for name, v in (("limit", limit), ("before", before)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise InvalidInput(f"{name} must be a non-negative integer, not {check.show(v)}")
        t = self.stamp()
        raw = yield from self._follow(sid, lambda s: self.store.history(s, owner, t, limit, before))
        return self._decode(raw)

    def log_interaction(
        self, session_id: str, user_message: str, assistant_response: str | None,
        metadata: Mapping[str, Any] | None, topics: Sequence[str] | None, user_id: str | None,
    ) -> Op[Interaction]:  # fmt: skip
        s = self.settings
        sid, owner = check.session_id(session_id), self._owner(user_id)
        check.text(user_message, "user_message", s.max_message_bytes)
        if assistant_response is not None:
            check.text(assistant_response, "assistant_response", s.max_message_bytes)
        meta = {} if metadata is None else metadata
        meta_json = self._json(meta, "metadata")
        tops = check.topics(topics, s.max_topics)
        t = self.stamp()
        interaction = trusted(Interaction, {  # every field checked above
            "id": check.new_interaction_id(), "timestamp": from_us(t.now),
            "user_message": user_message, "assistant_response": assistant_response,
            "metadata": dict(meta), "topics": tops,
        })  # fmt: skip
        try:
            record = encode_interaction(interaction, self.cipher, meta_json)
        except TypeError as e:  # a lone surrogate in a message
            raise InvalidInput(f"interaction is not valid Unicode: {e}") from e
        status, _ = yield from self.store.log(sid, owner, record, tops, s.max_topics, t)
        if status == "limit":
            raise PayloadTooLarge(f"session {sid!r} would exceed {s.max_topics} topics")
        return interaction

    def update_context(
        self, session_id: str, patch: Mapping[str, Any], user_id: str | None
    ) -> Op[Session]:
        sid, owner = check.session_id(session_id), self._owner(user_id)
        self._json(patch, "context patch")
        for _ in range(self.settings.max_update_retries):
            t = self.stamp()
            h, _ = yield from self.store.fetch(sid, owner, t, touch=False, history=0)
            current = record_from_hash(sid, h, self.cipher)
            context = apply_patch(current.context, patch)
            data = self.cipher.seal(self._json(context, "context"))
            if (yield from self.store.update_context(sid, owner, current.version, data, t)):
                return Session(
                    **current.model_dump(exclude={"context", "version", "last_activity"}),
                    context=context, version=current.version + 1,
                    last_activity=from_us(t.activity), expires_at=from_us(t.expires),
                )  # fmt: skip
        raise ConcurrentModification(
            f"context of {sid!r} kept changing under {self.settings.max_update_retries} attempts"
        )

    # -- preferences ---------------------------------------------------------------------

    def set_preferences(self, user_id: str, prefs: Mapping[str, Any]) -> Op[dict[str, Any]]:
        """Shallow merge into the user's preferences; a None value removes that key."""
        uid = check.user_id(user_id)
        self._json(prefs, "preferences")
        values = {k: self.cipher.seal(orjson.dumps(v)) for k, v in prefs.items() if v is not None}
        remove = [k for k, v in prefs.items() if v is None]
        yield from self.store.set_prefs(uid, values, remove)
        return (yield from self.get_preferences(uid))

    def get_preferences(self, user_id: str) -> Op[dict[str, Any]]:
        uid = check.user_id(user_id)
        raw = yield from self.store.get_prefs(uid)
        return {k: loads(self.cipher.open(v, "a preference"), "preference") for k, v in raw.items()}

    # -- listing -------------------------------------------------------------------------

    def list_active_sessions(
        self, user_id: str | None, limit: int, cursor: str | None
    ) -> Op[SessionPage]:
        uid = self._owner(user_id)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise InvalidInput(f"limit must be an integer from 1 to 10000, not {check.show(limit)}")
        offset = 0
        if cursor is not None:
            if not isinstance(cursor, str) or not cursor.isdigit() or len(cursor) > 12:
                raise InvalidInput(f"invalid cursor {check.show(cursor)}: pass back a next_cursor")
            offset = int(cursor)
        ids, rows = yield from self.store.page_summaries(uid, offset, limit)
        items = [
            summary_from_row(sid, r)
            for sid, r in zip(ids, rows)
            if sid is not None and r is not None
        ]
        more = len(ids) == limit
        return SessionPage(sessions=items, next_cursor=str(offset + limit) if more else None)

    def session_walk(self, user_id: str | None) -> IndexWalk:
        uid = self._owner(user_id)
        keys = self.store.keys
        return IndexWalk(self.store, keys.sessions if uid is None else keys.user_sessions(uid))

    def user_walk(self) -> IndexWalk:
        return IndexWalk(self.store, self.store.keys.users)

    # -- export, import, merge -----------------------------------------------------------

    def export_session_data(self, session_id: str, user_id: str | None) -> Op[dict[str, Any]]:
        doc = yield from self.export(session_id, user_id)
        return doc.model_dump(mode="json")

    def export(self, session_id: str, user_id: str | None) -> Op[SessionExport]:
        sid, owner = check.session_id(session_id), self._owner(user_id)
        return (yield from self._follow(sid, lambda s: self._export(s, owner)))

    def _export(self, sid: str, owner: str | None) -> Op[SessionExport]:
        h, raw = yield from self.store.fetch(sid, owner, self.stamp(), touch=False, history=-1)
        return SessionExport(
            session=record_from_hash(sid, h, self.cipher),
            interactions=self._decode(raw),
            expires_at=from_us(expires_from_hash(sid, h)),
        )

    def parse_export(self, doc: object) -> SessionExport:
        """Validate an export document (dict, JSON text, or model) and its content limits."""
        try:
            if isinstance(doc, SessionExport):
                parsed = doc
            elif isinstance(doc, (str, bytes, bytearray)):
                parsed = SessionExport.model_validate_json(doc)
            else:
                parsed = SessionExport.model_validate(doc)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            raise InvalidInput(
                f"not a valid redsession export ({e.error_count()} problems; "
                f"first at {where}: {first['msg']})"
            ) from e
        rec, s = parsed.session, self.settings
        check.session_id(rec.session_id)
        check.user_id(rec.user_id)
        for sid in rec.merged_from:
            check.session_id(sid)
        self._json(rec.context, "context")
        check.topics(rec.topics, s.max_topics)
        if rec.total_interactions != len(parsed.interactions):
            raise InvalidInput(
                f"total_interactions is {rec.total_interactions} but the document holds "
                f"{len(parsed.interactions)} interactions"
            )
        ids = set()
        for i in parsed.interactions:
            check.text(i.user_message, "user_message", s.max_message_bytes)
            if i.assistant_response is not None:
                check.text(i.assistant_response, "assistant_response", s.max_message_bytes)
            self._json(i.metadata, "metadata")
            check.topics(i.topics, s.max_topics)
            ids.add(i.id)
        if len(ids) != len(parsed.interactions):
            raise InvalidInput("the document repeats an interaction id")
        return parsed

    def import_session_data(
        self, doc: object, overwrite: bool, expect: tuple[int, int] | None = None
    ) -> Op[str]:
        """``expect`` (version, total_interactions): replace only that live state (restore)."""
        parsed = self.parse_export(doc)
        rec = parsed.session
        t = self.stamp(activity=to_us(rec.last_activity))
        expires = to_us(parsed.expires_at)
        if expires <= t.now:
            raise InvalidInput(f"session {rec.session_id!r} expired at {parsed.expires_at}")
        t = Stamp(activity=t.activity, expires=expires, now=t.now)
        try:
            records = [encode_interaction(i, self.cipher) for i in parsed.interactions]
        except TypeError as e:
            raise InvalidInput(f"an interaction is not valid Unicode: {e}") from e
        written = yield from self.store.write(
            rec.session_id, rec.user_id, hash_fields(rec, expires, self.cipher), records, t,
            mode="cas" if expect else "replace" if overwrite else "new", expect=expect,
        )  # fmt: skip
        if not written:
            raise ConcurrentModification(f"session {rec.session_id!r} changed; not replaced")
        return rec.session_id

    def merge_sessions(
        self, primary_id: str, secondary_id: str, user_id: str | None, allow_cross_user: bool
    ) -> Op[Session]:
        p_id, s_id = check.session_id(primary_id), check.session_id(secondary_id)
        owner = self._owner(user_id)
        if p_id == s_id:
            raise InvalidInput("cannot merge a session into itself")
        for _ in range(self.settings.max_update_retries):
            try:
                s_doc = yield from self._export(s_id, owner)
            except SessionMerged as m:
                if m.primary_id != p_id:
                    raise
                # Already merged (a re-run): the answer is the primary as it stands.
                return (yield from self.get_session(p_id, self.settings.resume_history, owner))
            p_doc = yield from self._export(p_id, owner)
            p, s = p_doc.session, s_doc.session
            if p.user_id != s.user_id and not allow_cross_user:
                raise PermissionDenied(
                    s_id, "sessions belong to different users; pass allow_cross_user to merge them"
                )
            rec, items = combine(p, p_doc.interactions, s, s_doc.interactions)
            t = self.stamp(activity=to_us(rec.last_activity))
            expires = max(t.expires, to_us(p_doc.expires_at), to_us(s_doc.expires_at))
            t = Stamp(activity=t.activity, expires=expires, now=t.now)
            if not same_content(rec, items, p, p_doc.interactions):
                rec = rec.model_copy(update={"version": p.version + 1})
                written = yield from self.store.write(
                    p_id, rec.user_id, hash_fields(rec, expires, self.cipher),
                    [encode_interaction(i, self.cipher) for i in items], t,
                    mode="cas", expect=(p.version, p.total_interactions),
                )  # fmt: skip
                if not written:
                    continue
            tomb = f"merged:{p_id}"
            if not (
                yield from self.store.delete(
                    s_id, None, tomb, t, expect=(s.version, s.total_interactions)
                )
            ):
                continue
            n = self.settings.resume_history
            return Session(
                **rec.model_dump(), expires_at=from_us(expires), history=items[-n:] if n else []
            )
        raise ConcurrentModification(f"sessions {p_id!r} and {s_id!r} kept changing during merge")

    # -- maintenance ---------------------------------------------------------------------

    def cleanup_expired_sessions(self, batch: int, dry_run: bool) -> Op[list[str]]:
        """Remove index entries of expired sessions, batch by batch; returns their ids.

        Costs O(expired): it reads only the expiry index up to now.
        """
        now = to_us(self.clock())
        removed: list[str] = []
        skip = 0  # entries that say expired but whose session lives (index drift)
        while True:
            entries = yield from self.store.upkeep.expired(now, skip + batch)
            entries = entries[skip:]
            if not entries:
                return removed
            alive = yield from self.store.exists([sid for sid, _, _ in entries])
            dead = [e for e, a in zip(entries, alive) if not a]
            skip += len(entries) - len(dead)
            if dry_run:
                removed += [sid for sid, _, _ in dead]
                skip += len(dead)
            else:
                removed += yield from self.store.upkeep.forget(dead, now)
            if len(entries) < batch:
                return removed

    def stats(self) -> Op[StoreStats]:
        n_s, n_u, oldest, newest, memory = yield from self.store.counts()
        total, walk = 0, self.session_walk(None)
        while not walk.done:  # O(sessions): stats reads them all by nature
            total += yield from self.store.totals((yield from walk.next_page()))
        now = to_us(self.clock())
        expiring = yield from self.store.upkeep.count_expiring(now, now + _DAY_US)
        return StoreStats(
            sessions=n_s, users=n_u, interactions=total, redis_used_memory=memory,
            oldest_activity=from_us(oldest[0][1]) if oldest else None,
            newest_activity=from_us(newest[0][1]) if newest else None,
            expiring_24h=expiring,
        )  # fmt: skip

    def changed_sessions(self, count: int) -> Op[list[tuple[str, int]]]:
        """(session id, change stamp) of sessions changed since their last dump."""
        return (yield from self.store.upkeep.dirty(check.integer(count, "count", 1)))

    def mark_dumped(self, entries: Sequence[tuple[str, int]]) -> Op[int]:
        return (yield from self.store.upkeep.clear_dirty(check.stamped_ids(entries)))
