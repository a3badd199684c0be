"""A session's checkpoints: a framework's snapshots of a run (LangGraph's), beside its history.

The payloads are opaque bytes the framework serialized; they are sealed under the store's
cipher like history records, while namespaces, ids, write keys and blob names stay in the
clear (they order and find the payloads, as ids and times do for records). Every write is
one script (storage/checkpoints.py) that also creates a missing session for ``create_for``
and slides the session's expiry over all of its keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redsession.core.base import Core
from redsession.core.sessions import checked_scope
from redsession.errors import InvalidInput, PayloadTooLarge, SessionNotFound
from redsession.model import validation as check
from redsession.model.codec import scope_field
from redsession.storage.checkpoints import SEP, Checkpoints, Row
from redsession.storage.commands import Op

MAX_NAME = 1024  # characters in a namespace, checkpoint id, write key, blob name or version


def name(value: object, what: str, *, empty: bool = False) -> str:
    """A namespace, id, key or blob name: a str without NUL (it separates them in storage);
    only a namespace may be empty (LangGraph's root namespace is '')."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    check.text(value, what, MAX_NAME * 4)
    if SEP in value or len(value) > MAX_NAME or (not value and not empty):
        raise InvalidInput(f"{what} must be 1 to {MAX_NAME} characters, without NUL")
    return value


def _ns(value: object) -> str:
    return name(value, "namespace", empty=True)


def _tuples(core: Core, value: object, size: int, what: str) -> list[tuple[object, ...]]:
    """A list of ``size``-tuples, at most Settings.max_append_items of them."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidInput(f"{what} must be a list of {size}-tuples, not {check.show(value)}")
    if len(value) > core.settings.max_append_items:
        raise InvalidInput(f"at most {core.settings.max_append_items} {what} per call")
    if not all(isinstance(t, (list, tuple)) and len(t) == size for t in value):
        raise InvalidInput(f"{what} must be a list of {size}-tuples")
    return [tuple(t) for t in value]


def _payload(core: Core, value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"{what} must be bytes, not {type(value).__name__}")
    data = bytes(value)
    if len(data) > core.settings.max_checkpoint_bytes:
        raise PayloadTooLarge(
            f"{what} is {len(data)} bytes; the limit is {core.settings.max_checkpoint_bytes}"
        )
    return core.cipher.seal(data)


def _creator(core: Core, create_for: str, scope: Mapping[str, str] | None) -> tuple[str, bytes]:
    return check.user_id(create_for), scope_field(checked_scope(core, scope))


def put_checkpoint(
    core: Core, session_id: str, ns: str, checkpoint_id: str, payload: bytes,
    blobs: Sequence[tuple[str, str, bytes]], create_for: str,
    scope: Mapping[str, str] | None = None,
) -> Op[None]:  # fmt: skip
    """Store a checkpoint and the (name, version, value) blobs it brings."""
    sid = check.session_id(session_id)
    uid, scope_json = _creator(core, create_for, scope)
    ns, cid = _ns(ns), name(checkpoint_id, "checkpoint id")
    sealed = _payload(core, payload, "checkpoint")
    values = [
        (name(n, "blob name"), name(v, "blob version"), _payload(core, b, "blob"))
        for n, v, b in _tuples(core, blobs, 3, "blobs")
    ]
    t = core.stamp(op=core.op(None))
    yield from Checkpoints(core.store).put(sid, t, uid, scope_json, ns, cid, sealed, values)


def put_writes(
    core: Core, session_id: str, ns: str, checkpoint_id: str,
    writes: Sequence[tuple[str, bytes, bool]], create_for: str,
    scope: Mapping[str, str] | None = None,
) -> Op[None]:  # fmt: skip
    """Record (key, value, replace) writes against a checkpoint; an existing key keeps its
    value unless ``replace``."""
    sid = check.session_id(session_id)
    uid, scope_json = _creator(core, create_for, scope)
    ns, cid = _ns(ns), name(checkpoint_id, "checkpoint id")
    sealed = []
    for k, v, replace in _tuples(core, writes, 3, "writes"):
        if not isinstance(replace, bool):
            raise InvalidInput(f"a write's replace flag must be a bool, not {check.show(replace)}")
        sealed.append((name(k, "write key"), _payload(core, v, "write"), replace))
    if not sealed:
        return
    t = core.stamp(op=core.op(None))
    yield from Checkpoints(core.store).put_writes(sid, t, uid, scope_json, ns, cid, sealed)


def _opened(core: Core, row: Row) -> Row:
    open_ = core.cipher.open
    return Row(
        row.ns, row.checkpoint_id, open_(row.payload, "a checkpoint"),
        [(k, open_(v, "a checkpoint write")) for k, v in row.writes],
    )  # fmt: skip


def get_checkpoint(
    core: Core, session_id: str, ns: str, checkpoint_id: str | None
) -> Op[Row | None]:
    """Checkpoint ``checkpoint_id`` of ``ns`` (None: the newest) with its writes; None when
    the session or the checkpoint is not there."""
    sid = check.session_id(session_id)
    ns = _ns(ns)
    cid = None if checkpoint_id is None else name(checkpoint_id, "checkpoint id")
    try:
        row = yield from Checkpoints(core.store).get(sid, core.stamp(), ns, cid)
    except SessionNotFound:
        return None
    return None if row is None else _opened(core, row)


def list_checkpoints(
    core: Core, session_id: str, ns: str | None, before: str | None, resume: bytes | None,
    count: int,
) -> Op[tuple[list[Row], bytes | None]]:  # fmt: skip
    """A page of checkpoints, newest first (see storage.checkpoints.Checkpoints.page), and
    where the next page starts (None: this was the last)."""
    sid = check.session_id(session_id)
    ns = None if ns is None else _ns(ns)
    before = None if before is None else name(before, "checkpoint id")
    count = check.integer(count, "count", 1)
    if resume is not None and (not isinstance(resume, bytes) or len(resume) > 8 * MAX_NAME):
        raise InvalidInput("resume must be the bytes a previous page returned, or None")
    try:
        page = yield from Checkpoints(core.store).page(sid, core.stamp(), ns, before, resume, count)
    except SessionNotFound:
        return [], None
    return [_opened(core, r) for r in page.rows], page.resume


def get_blobs(
    core: Core, session_id: str, ns: str, names: Sequence[tuple[str, str]]
) -> Op[list[bytes | None]]:
    """The (name, version) blobs of ``ns``: their values, None where there is none."""
    sid = check.session_id(session_id)
    ns = _ns(ns)
    asked = [
        (name(n, "blob name"), name(v, "blob version"))
        for n, v in _tuples(core, names, 2, "blob names")
    ]
    values = yield from Checkpoints(core.store).blobs(sid, ns, asked)
    return [None if v is None else core.cipher.open(v, "a blob") for v in values]


def clear_checkpoints(core: Core, session_id: str) -> Op[bool]:
    """Remove every checkpoint, blob and write of the session, which stays (with its
    history); False when there is no such session."""
    sid = check.session_id(session_id)
    try:
        yield from Checkpoints(core.store).clear(sid, core.stamp(op=core.op(None)))
    except SessionNotFound:
        return False
    return True


def copy_checkpoints(
    core: Core, source_id: str, target_id: str, create_for: str,
    scope: Mapping[str, str] | None = None,
) -> Op[int]:  # fmt: skip
    """Copy every checkpoint, blob and write of one session into another (created for
    ``create_for`` when missing); returns the number of fields copied. The two sessions may
    sit in different slots: one read, then one write."""
    src, dst = check.session_id(source_id), check.session_id(target_id)
    uid, scope_json = _creator(core, create_for, scope)
    try:
        _, _, side = yield from core.store.fetch_all(src, None, core.stamp(), history=0, side=True)
    except SessionNotFound:
        return 0
    if side is None or not side.fields:
        return 0
    t = core.stamp(op=core.op(None))
    yield from Checkpoints(core.store).write(
        dst, t, uid, scope_json, set_=list(side.fields.items()), add=side.members
    )
    return len(side.fields)
