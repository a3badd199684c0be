"""Whole sessions in and out: export, import, merge, and the one whole-session rewrite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import orjson
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from redsession.core.base import Core
from redsession.core.sessions import get_session
from redsession.errors import ConcurrentModification, InvalidInput, PermissionDenied, SessionMerged
from redsession.model import validation as check
from redsession.model.codec import (
    encode_entry,
    export_from_hash,
    hash_fields,
    side_data,
    side_values,
    state_fields,
)
from redsession.model.contexts import overlay
from redsession.model.models import (
    Interaction,
    Item,
    Session,
    SessionExport,
    SessionExportV1,
    SessionRecord,
    SideData,
    to_us,
)
from redsession.storage.commands import Op
from redsession.storage.store import Side, Stamp


def rewrite(
    core: Core, rec: SessionRecord, history: Sequence[Interaction | Item], t: Stamp, *,
    mode: str, kind: str, expect: tuple[int, int] | None = None, side: SideData | None = None,
    side_rev: str = "",
) -> Op[bool]:  # fmt: skip
    """Replace a whole session (hash, history and side data) in one script, under
    ``core``'s cipher.

    ``mode`` 'new' refuses an existing session or tombstone, 'replace' overwrites, 'cas'
    replaces only while the live (version, total) is ``expect``; False on a CAS conflict.
    ``t.expires`` becomes the session's expiry; ``kind`` names its event (import, restore,
    rotate).
    """
    records = _records(core, history)
    fields = hash_fields(rec, t.expires, core.cipher)
    stored = None
    if side is not None:
        values = side_values(side, core.settings.max_checkpoint_bytes)
        stored = Side({k: core.cipher.seal(v) for k, v in values.items()}, list(side.members))
    return (
        yield from core.store.write(
            rec.session_id, rec.user_id, fields, records, t, mode=mode, kind=kind,
            expect=expect, side=stored, side_rev=side_rev,
        )
    )  # fmt: skip


def _records(core: Core, history: Sequence[Interaction | Item]) -> list[bytes]:
    try:
        return [encode_entry(e, core.cipher) for e in history]
    except TypeError as e:  # orjson: a lone surrogate
        raise InvalidInput(f"a history entry is not valid Unicode: {e}") from e


def export(
    core: Core, session_id: str, user_id: str | None, follow_merged: bool = True
) -> Op[SessionExport]:
    sid, owner = check.session_id(session_id), core.owner(user_id)
    return (yield from core.follow(sid, lambda s: _export(core, s, owner), follow_merged))


def _export(core: Core, sid: str, owner: str | None) -> Op[SessionExport]:
    h, raw, side = yield from core.store.fetch_all(sid, owner, core.stamp(), side=True)
    doc = export_from_hash(sid, h, raw, core.cipher)
    data = None if side is None else side_data(side.fields, side.members, core.cipher)
    return doc if data is None else doc.model_copy(update={"side": data})


def _version(doc: object) -> str | None:
    # A document without a version is a version 1 one: it was the default then.
    v = doc.get("version", 1) if isinstance(doc, dict) else getattr(doc, "version", None)
    return str(v) if v in (1, 2) else None


_DOCUMENT: TypeAdapter[SessionExport | SessionExportV1] = TypeAdapter(
    Annotated[
        Annotated[SessionExport, Tag("2")] | Annotated[SessionExportV1, Tag("1")],
        Discriminator(_version, custom_error_type="version",
                      custom_error_message="version must be 1 or 2"),
    ]
)  # fmt: skip


def parse_export(core: Core, doc: object) -> SessionExport:
    """Validate an export document (dict, JSON text, or model; version 1 or 2) and its
    content limits; a version 1 document comes back as version 2."""
    try:
        if isinstance(doc, (SessionExport, SessionExportV1)):
            parsed = doc
        elif isinstance(doc, (str, bytes, bytearray)):
            parsed = _DOCUMENT.validate_json(doc)
        else:
            parsed = _DOCUMENT.validate_python(doc)
    except ValidationError as e:
        raise InvalidInput(f"not a valid redsession export: {check.problems(e)}") from e
    if isinstance(parsed, SessionExportV1):
        parsed = parsed.upgrade()
    rec, s = parsed.session, core.settings
    check.session_id(rec.session_id)
    check.user_id(rec.user_id)
    for sid in rec.merged_from:
        check.session_id(sid)
    core.json(rec.context, "context")
    core.json(rec.state, "state")
    if rec.scope is not None:
        core.json(rec.scope, "scope")
    if rec.revision is not None:
        check.revision(rec.revision)
    check.topics(rec.topics, s.max_topics)
    if rec.total_interactions != len(parsed.history):
        raise InvalidInput(
            f"total_interactions is {rec.total_interactions} but the document holds "
            f"{len(parsed.history)} history entries"
        )
    ids = set()
    for entry in parsed.history:
        check.entry_id(entry.id)
        if isinstance(entry, Item):
            check.json_object(
                entry.item, "item", max_bytes=s.max_message_bytes, max_depth=s.max_json_depth
            )
        else:
            check.text(entry.user_message, "user_message", s.max_message_bytes)
            if entry.assistant_response is not None:
                check.text(entry.assistant_response, "assistant_response", s.max_message_bytes)
            core.json(entry.metadata, "metadata")
            check.topics(entry.topics, s.max_topics)
        ids.add(entry.id)
    if len(ids) != len(parsed.history):
        raise InvalidInput("the document repeats a history entry id")
    if parsed.side is not None:  # base64 and sizes (sealing it again checks nothing more)
        side_values(parsed.side, s.max_checkpoint_bytes)
    return parsed


def import_session_data(
    core: Core, doc: object, overwrite: bool, expect: tuple[int, int] | None = None,
    op_id: str | None = None, kind: str = "import",
) -> Op[str]:  # fmt: skip
    """``expect`` (version, total_interactions): replace only that live state (restore).
    ``kind``: the event's ('restore' for the worker's restore)."""
    parsed = parse_export(core, doc)
    rec = parsed.session
    expires = to_us(parsed.expires_at)
    t = core.stamp(activity=to_us(rec.last_activity), expires=expires, op=core.op(op_id))
    if expires <= t.now:
        raise InvalidInput(f"session {rec.session_id!r} expired at {parsed.expires_at}")
    mode = "cas" if expect else "replace" if overwrite else "new"
    written = yield from rewrite(
        core, rec, parsed.history, t, mode=mode, kind=kind, expect=expect, side=parsed.side
    )
    if not written:
        raise ConcurrentModification(f"session {rec.session_id!r} changed; not replaced")
    return rec.session_id


def merge_sessions(
    core: Core, primary_id: str, secondary_id: str, user_id: str | None,
    allow_cross_user: bool, op_id: str | None = None,
) -> Op[Session]:  # fmt: skip
    """Fold the secondary into the primary: a fence, one atomic fold, a tombstone.

    1. FENCE the secondary: from then on its writes are refused with SessionMerged naming the
       primary, so a writer retries there and nothing written to the secondary can be lost.
    2. Read the (now frozen) secondary whole, and fold it into the primary in one script
       (MERGE_INTO): its records join the primary's, interleaved by time and deduplicated by
       id, whatever the primary received meanwhile. Only a concurrent context change makes
       the fold retry (appends never do), since the merged context is computed here.
    3. Tombstone the secondary as merged into the primary.
    A crash after any step leaves a state the same call completes: the fence holds, and the
    fold deduplicates by id. Once merged, the call answers with the primary. Each step has an
    operation id of its own, derived from the call's (two steps touch the secondary).
    """
    p_id, s_id = check.session_id(primary_id), check.session_id(secondary_id)
    owner = core.owner(user_id)
    if p_id == s_id:
        raise InvalidInput("cannot merge a session into itself")
    n = core.settings.resume_history
    op = core.op(op_id)
    try:
        s_owner = (yield from get_session(core, s_id, 0, owner, follow_merged=False)).user_id
    except SessionMerged as m:
        if m.primary_id != p_id:
            raise
        # Already merged (a re-run): the answer is the primary as it stands.
        return (yield from get_session(core, p_id, n, owner))
    p_owner = (yield from get_session(core, p_id, 0, owner, follow_merged=False)).user_id
    if p_owner != s_owner and not allow_cross_user:
        raise PermissionDenied(
            s_id, "sessions belong to different users; pass allow_cross_user to merge them"
        )
    yield from core.store.fence(s_id, owner, p_id, p_owner, core.stamp(op=f"{op}:fence"))
    s_doc = yield from _export(core, s_id, owner)
    s_rec = s_doc.session
    records = _records(core, s_doc.history)
    for _ in range(core.settings.max_update_retries):
        p = yield from get_session(core, p_id, 0, owner, follow_merged=False)
        merged = overlay(p.context, s_rec.context)
        context = b"" if merged == p.context else core.cipher.seal(core.json(merged, "context"))
        merged_from = list(dict.fromkeys((*p.merged_from, s_id, *s_rec.merged_from)))
        sources = b"" if merged_from == p.merged_from else orjson.dumps(merged_from)
        t = core.stamp(activity=to_us(s_rec.last_activity), op=f"{op}:fold")
        t = t._replace(expires=max(t.expires, to_us(s_doc.expires_at)))
        status = yield from core.store.merge_into(
            p_id, owner, p.version, context, to_us(s_rec.created_at), sources,
            state_fields(s_rec.state, core.cipher), records, s_rec.topics, t,
        )  # fmt: skip
        if status == "legacy":  # (upgrading is idempotent: no operation id)
            yield from _upgrade(core, p_id, owner, t._replace(op=""))
        elif status == "ok":
            break
    else:
        raise ConcurrentModification(f"context of {p_id!r} kept changing during the merge")
    tomb = core.stamp(op=f"{op}:tomb")
    if not (yield from core.store.delete(s_id, owner, tomb, merged_into=(p_id, p_owner))):
        raise ConcurrentModification(f"session {s_id!r} is no longer fenced for {p_id!r}")
    return (yield from get_session(core, p_id, n, owner))


def _upgrade(core: Core, sid: str, owner: str | None, t: Stamp) -> Op[None]:
    """Give every record written before headers its header, in place (a merge needs them)."""
    raw = yield from core.store.history(sid, owner, t, None, None)
    old = [(i, r) for i, r in enumerate(raw) if not r[:1].isdigit()]
    new = [encode_entry(e, core.cipher) for e in core.decode([r for _, r in old])]
    yield from core.store.upgrade(sid, owner, [(i, r, n) for (i, r), n in zip(old, new)], t)
