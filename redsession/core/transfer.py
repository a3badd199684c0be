"""Whole sessions in and out: export, import, merge, and the one whole-session rewrite."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pydantic import ValidationError

from redsession.core.base import Core
from redsession.core.sessions import get_session
from redsession.errors import ConcurrentModification, InvalidInput, PermissionDenied, SessionMerged
from redsession.model import validation as check
from redsession.model.codec import (
    encode_interaction,
    expires_from_hash,
    hash_fields,
    record_from_hash,
)
from redsession.model.merge import combine, same_content
from redsession.model.models import (
    Interaction,
    Session,
    SessionExport,
    SessionRecord,
    from_us,
    to_us,
)
from redsession.storage.commands import Op
from redsession.storage.store import Stamp


def rewrite(
    core: Core, rec: SessionRecord, items: Sequence[Interaction], t: Stamp, *,
    mode: str, expect: tuple[int, int] | None = None,
) -> Op[bool]:  # fmt: skip
    """Replace a whole session (hash and history) in one script, under ``core``'s cipher.

    ``mode`` 'new' refuses an existing session or tombstone, 'replace' overwrites, 'cas'
    replaces only while the live (version, total) is ``expect``; False on a CAS conflict.
    ``t.expires`` becomes the session's expiry.
    """
    try:
        records = [encode_interaction(i, core.cipher) for i in items]
    except TypeError as e:  # orjson: a lone surrogate
        raise InvalidInput(f"an interaction is not valid Unicode: {e}") from e
    fields = hash_fields(rec, t.expires, core.cipher)
    return (
        yield from core.store.write(
            rec.session_id, rec.user_id, fields, records, t, mode=mode, expect=expect
        )
    )


def export(
    core: Core, session_id: str, user_id: str | None, follow_merged: bool = True
) -> Op[SessionExport]:
    sid, owner = check.session_id(session_id), core.owner(user_id)
    return (yield from core.follow(sid, lambda s: _export(core, s, owner), follow_merged))


def _export(core: Core, sid: str, owner: str | None) -> Op[SessionExport]:
    h, raw = yield from core.store.fetch(sid, owner, core.stamp(), touch=False, history=-1)
    return SessionExport(
        session=record_from_hash(sid, h, core.cipher),
        interactions=core.decode(raw),
        expires_at=from_us(expires_from_hash(sid, h)),
    )


def parse_export(core: Core, doc: object) -> SessionExport:
    """Validate an export document (dict, JSON text, or model) and its content limits."""
    try:
        if isinstance(doc, SessionExport):
            parsed = doc
        elif isinstance(doc, (str, bytes, bytearray)):
            parsed = SessionExport.model_validate_json(doc)
        else:
            parsed = SessionExport.model_validate(doc)
    except ValidationError as e:
        raise InvalidInput(f"not a valid redsession export: {check.problems(e)}") from e
    rec, s = parsed.session, core.settings
    check.session_id(rec.session_id)
    check.user_id(rec.user_id)
    for sid in rec.merged_from:
        check.session_id(sid)
    core.json(rec.context, "context")
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
        core.json(i.metadata, "metadata")
        check.topics(i.topics, s.max_topics)
        ids.add(i.id)
    if len(ids) != len(parsed.interactions):
        raise InvalidInput("the document repeats an interaction id")
    return parsed


def import_session_data(
    core: Core, doc: object, overwrite: bool, expect: tuple[int, int] | None = None
) -> Op[str]:
    """``expect`` (version, total_interactions): replace only that live state (restore)."""
    parsed = parse_export(core, doc)
    rec = parsed.session
    expires = to_us(parsed.expires_at)
    t = core.stamp(activity=to_us(rec.last_activity), expires=expires)
    if expires <= t.now:
        raise InvalidInput(f"session {rec.session_id!r} expired at {parsed.expires_at}")
    mode = "cas" if expect else "replace" if overwrite else "new"
    if not (yield from rewrite(core, rec, parsed.interactions, t, mode=mode, expect=expect)):
        raise ConcurrentModification(f"session {rec.session_id!r} changed; not replaced")
    return rec.session_id


def merge_sessions(
    core: Core, primary_id: str, secondary_id: str, user_id: str | None, allow_cross_user: bool
) -> Op[Session]:
    p_id, s_id = check.session_id(primary_id), check.session_id(secondary_id)
    owner = core.owner(user_id)
    if p_id == s_id:
        raise InvalidInput("cannot merge a session into itself")
    n = core.settings.resume_history
    for _ in range(core.settings.max_update_retries):
        try:
            s_doc = yield from _export(core, s_id, owner)
        except SessionMerged as m:
            if m.primary_id != p_id:
                raise
            # Already merged (a re-run): the answer is the primary as it stands.
            return (yield from get_session(core, p_id, n, owner))
        p_doc = yield from _export(core, p_id, owner)
        p, s = p_doc.session, s_doc.session
        if p.user_id != s.user_id and not allow_cross_user:
            raise PermissionDenied(
                s_id, "sessions belong to different users; pass allow_cross_user to merge them"
            )
        rec, items = combine(p, p_doc.interactions, s, s_doc.interactions)
        t = core.stamp(activity=to_us(rec.last_activity))
        expires = max(t.expires, to_us(p_doc.expires_at), to_us(s_doc.expires_at))
        t = dataclasses.replace(t, expires=expires)
        if not same_content(rec, items, p, p_doc.interactions):
            rec = rec.model_copy(update={"version": p.version + 1})
            if not (
                yield from rewrite(
                    core, rec, items, t, mode="cas", expect=(p.version, p.total_interactions)
                )
            ):
                continue
        tomb = f"merged:{p_id}"
        expect = (s.version, s.total_interactions)
        if not (yield from core.store.delete(s_id, None, tomb, t, expect=expect)):
            continue
        return Session(
            **rec.model_dump(), expires_at=from_us(expires), history=items[-n:] if n else []
        )
    raise ConcurrentModification(f"sessions {p_id!r} and {s_id!r} kept changing during merge")
