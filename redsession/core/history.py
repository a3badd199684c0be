"""A session's history: interactions and framework items, appended and read back.

One history per session (a Redis LIST of records, model/codec.py). log_interaction appends
an interaction; append_items appends framework items; both are one script, O(k) in what they
append. Reads return entries (Interaction | Item) or, for a framework, items: an interaction
reads as the user's message, then the assistant's (models.interaction_items).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson

from redsession.core.base import Core
from redsession.core.sessions import checked_scope, checked_state
from redsession.errors import (
    ConcurrentModification,
    InvalidInput,
    PayloadTooLarge,
    RevisionConflict,
)
from redsession.model import validation as check
from redsession.model.codec import (
    TIME_AT,
    encode_interaction,
    encode_item,
    record_time,
    scope_field,
    state_fields,
    time_of_record,
)
from redsession.model.models import (
    Interaction,
    Item,
    as_items,
    built,
    from_us,
    interaction_items,
)
from redsession.storage.commands import Op
from redsession.storage.store import Revision, Stamp

_US = timedelta(microseconds=1)
E = TypeVar("E", Interaction, Item)


def get_history(
    core: Core, session_id: str, limit: int | None, before: int | None, user_id: str | None,
    touch: bool = False,
) -> Op[list[Interaction | Item]]:  # fmt: skip
    """Entries oldest first: the newest ``limit`` of those at positions before ``before``
    (None: all). ``touch`` counts the read as activity (it slides the expiry)."""
    sid, owner = check.session_id(session_id), core.owner(user_id)
    for name, v in (("limit", limit), ("before", before)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise InvalidInput(f"{name} must be a non-negative integer, not {check.show(v)}")
    t = core.stamp()
    read = lambda s: core.store.history(s, owner, t, limit, before, touch=touch)  # noqa: E731
    return core.decode((yield from core.follow(sid, read)))


def log_interaction(
    core: Core, session_id: str, user_message: str, assistant_response: str | None,
    metadata: Mapping[str, Any] | None, topics: Sequence[str] | None, user_id: str | None,
    op_id: str | None = None,
) -> Op[Interaction]:  # fmt: skip
    s = core.settings
    sid, owner = check.session_id(session_id), core.owner(user_id)
    check.text(user_message, "user_message", s.max_message_bytes)
    if assistant_response is not None:
        check.text(assistant_response, "assistant_response", s.max_message_bytes)
    meta = {} if metadata is None else metadata
    meta_json = core.json(meta, "metadata")
    tops = check.topics(topics, s.max_topics)
    if op_id is None:  # a new entry's random id serves as a new operation id as well
        rid = op = check.new_entry_id()
    else:
        op = check.op_id(op_id)
        rid = check.entry_id_for_op(op, 0)
    t = core.stamp(op=op)
    # Every field was checked above (the id is ours): built, not validated a second time.
    interaction = built(Interaction, {
        "kind": "interaction", "id": rid, "timestamp": from_us(t.now),
        "user_message": user_message, "assistant_response": assistant_response,
        "metadata": dict(meta), "topics": tops,
    })  # fmt: skip
    try:
        record = encode_interaction(interaction, core.cipher, meta_json)
    except TypeError as e:  # a lone surrogate in a message
        raise InvalidInput(f"interaction is not valid Unicode: {e}") from e
    [interaction] = yield from _append(core, sid, owner, [record], [interaction], tops, t, None)
    return interaction


def _append(
    core: Core, sid: str, owner: str | None, records: Sequence[bytes], entries: Sequence[E],
    topics: Sequence[str], t: Stamp, create_for: str | None, scope: bytes = b"",
    state: Sequence[bytes | str] = (), revision: Revision | None = None,
) -> Op[list[E]]:  # fmt: skip
    """Append the records of ``entries``; returns the entries as stored. A repeated
    operation stored its records the first time: the same ids (from its operation id), at
    that call's times, which it returns."""
    limit = core.settings.max_topics
    status, _, first = yield from core.store.append(
        sid, owner, records, topics, limit, t, create_for, scope, state, revision
    )
    if status == "limit":
        raise PayloadTooLarge(f"session {sid!r} would exceed {limit} topics")
    if status == "conflict":
        raise RevisionConflict(sid)
    if not records or first == records[0][TIME_AT]:
        return list(entries)
    shift = time_of_record(first) - entries[0].timestamp
    return [e.model_copy(update={"timestamp": e.timestamp + shift}) for e in entries]


def checked_revision(revision: object) -> Revision:
    """A revision check (expected, new): ``expected`` None means the session must not exist
    yet."""
    if not isinstance(revision, (tuple, list)) or len(revision) != 2:
        raise InvalidInput(f"revision must be (expected, new), not {check.show(revision)}")
    expected, new = revision
    return Revision(None if expected is None else check.revision(expected), check.revision(new))


def _items(
    core: Core, items: object, at: datetime, ids: object, times: object = None, op: str = ""
) -> tuple[list[Item], list[bytes]]:
    """Check framework items and encode their records. Their times are ``times`` (one per
    item, e.g. a framework event's own) or ``at``, ``at`` + 1 µs, ...: distinct, so that a
    merge, which orders by time, keeps their order. Their ids are ``ids``, or derived from
    a caller's operation id ``op``, or new."""
    s = core.settings
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise InvalidInput("items must be a list of JSON objects")
    if len(items) > s.max_append_items:
        raise PayloadTooLarge(f"{len(items)} items in one call; the limit is {s.max_append_items}")
    given = _one_each(ids, items, "ids")
    if given is not None:
        given = [check.entry_id(i) for i in given]
        if len(set(given)) != len(given):
            raise InvalidInput("ids repeat an id")
    stamps = _one_each(times, items, "times")
    if stamps is not None:
        for when in stamps:
            if not isinstance(when, datetime) or when.tzinfo is None:
                raise InvalidInput(f"times must be aware datetimes, not {check.show(when)}")
    models, records = [], []
    for n, item in enumerate(items):
        data = check.json_object(
            item, f"item {n}", max_bytes=s.max_message_bytes, max_depth=s.max_json_depth
        )
        if given is not None:
            rid = given[n]
        else:
            rid = check.entry_id_for_op(op, n) if op else check.new_entry_id()
        when = at + n * _US if stamps is None else stamps[n]
        models.append(Item.model_validate({"id": rid, "timestamp": when, "item": item}))
        records.append(encode_item(rid, when, data, core.cipher))
    return models, records


def _one_each(values: object, items: Sequence[object], what: str) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or (
        len(values) != len(items)
    ):
        raise InvalidInput(f"{what} must be a list with one per item")
    return list(values)


def append_items(
    core: Core, session_id: str, items: Sequence[Mapping[str, Any]], user_id: str | None,
    ids: Sequence[str] | None, topics: Sequence[str] | None, create_for: str | None,
    state: Mapping[str, Any] | None = None, scope: Mapping[str, str] | None = None,
    times: Sequence[datetime] | None = None, op_id: str | None = None,
    revision: tuple[str | None, str] | None = None,
) -> Op[list[Item]]:  # fmt: skip
    """Append framework items and set session ``state`` keys with them, in one script;
    ``create_for`` creates a missing session for that user, with ``scope``.

    ``revision`` (expected, new): only if the session's revision is ``expected`` (None: only
    if the session does not exist yet, which may reuse an id its owner deleted), and then
    set it to ``new``, in the same script; RevisionConflict otherwise.
    """
    sid, owner = check.session_id(session_id), core.owner(user_id)
    create = None if create_for is None else check.user_id(create_for)
    tops = check.topics(topics, core.settings.max_topics)
    fields = state_fields(checked_state(core, state), core.cipher)
    sc = scope_field(checked_scope(core, scope))
    rev = None if revision is None else checked_revision(revision)
    if rev is not None and rev.expected is None and create is None:
        raise InvalidInput("a revision check for a new session needs create_for")
    t = core.stamp(op=core.op(op_id))
    models, records = _items(core, items, from_us(t.now), ids, times, "" if op_id is None else t.op)
    if not records and not fields and rev is None:
        return []
    return (
        yield from _append(core, sid, owner, records, models, tops, t, create, sc, fields, rev)
    )


def get_entry(
    core: Core, session_id: str, entry_id: str, user_id: str | None
) -> Op[Interaction | Item | None]:
    """The history entry with that id, or None. O(entries newer than it); not counted as
    activity."""
    sid, owner = check.session_id(session_id), core.owner(user_id)
    eid, t = check.entry_id(entry_id), core.stamp()
    rec = yield from core.follow(sid, lambda s: core.store.entry(s, owner, t, eid))
    return None if rec is None else core.decode([rec])[0]


def get_items(
    core: Core, session_id: str, limit: int | None, user_id: str | None, touch: bool
) -> Op[list[dict[str, Any]]]:
    """The newest ``limit`` items as a framework reads them (None: all; 0 or less: none).

    An interaction is two items, so the newest ``limit`` entries hold enough of them. Items
    are opaque to redsession, so the records are parsed as plain JSON (they were checked on
    the way in), not validated into models: what a framework wants back is the dicts.
    """
    sid, owner = check.session_id(session_id), core.owner(user_id)
    n = None if limit is None else max(0, check.integer(limit, "limit"))
    t = core.stamp()
    read = lambda s: core.store.history(s, owner, t, n, None, touch=touch)  # noqa: E731
    raw = yield from core.follow(sid, read)
    items = as_items(core.decode(raw)) if core.cipher.enabled else _plain_items(raw, core)
    return items if n is None else items[-n:] if n else []


def _plain_items(raw: Sequence[bytes], core: Core) -> list[dict[str, Any]]:
    try:
        entries = orjson.loads(b"[" + b",".join(raw) + b"]")
    except orjson.JSONDecodeError:
        entries = None
    out: list[dict[str, Any]] = []
    for e in entries or ():
        kind = e.get("kind") if type(e) is dict else None
        if kind == "item" and type(e.get("item")) is dict:
            out.append(e["item"])
        elif kind == "interaction" and type(e.get("user_message")) is str:
            out.append({"role": "user", "content": e["user_message"]})
            if e.get("assistant_response") is not None:
                out.append({"role": "assistant", "content": e["assistant_response"]})
        else:  # written before the layout, or not ours: the models say what it is
            return as_items(core.decode(raw))
    return out


def history_since(
    core: Core, session_id: str, since: datetime, user_id: str | None, touch: bool
) -> Op[list[Interaction | Item]]:
    """The entries whose time is ``since`` or later, oldest first.

    O(entries returned), plus those within Settings.clock_skew before ``since``: the read
    goes back from the newest entry until one older than that margin.
    """
    sid, owner = check.session_id(session_id), core.owner(user_id)
    if not isinstance(since, datetime) or since.tzinfo is None:
        raise InvalidInput(f"since must be a timezone-aware datetime, not {check.show(since)}")
    floor = record_time(since - core.settings.clock_skew)
    t, at = core.stamp(), record_time(since)
    read = lambda s: core.store.after(s, owner, t, at, floor, touch=touch)  # noqa: E731
    return core.decode((yield from core.follow(sid, read)))


def pop_item(
    core: Core, session_id: str, user_id: str | None, op_id: str | None = None
) -> Op[dict[str, Any] | None]:
    """Remove the newest item and return it (None when the history is empty).

    The newest item of an interaction is its assistant's answer: that half is removed and the
    user's message stays, as an interaction without an answer (a compare-and-set on the
    newest record, so a racing append is never overwritten).
    """
    sid, owner = check.session_id(session_id), core.owner(user_id)
    op = core.op(op_id)
    for _ in range(core.settings.max_update_retries):
        t = core.stamp(op=op)
        status, rec = yield from core.store.pop(sid, owner, t)
        if status == "empty" or rec is None:
            return None
        (entry,) = core.decode([rec])
        if status == "ok":
            return as_items([entry])[-1]
        assert isinstance(entry, Interaction)  # 'interaction': ours to split
        *rest, newest = interaction_items(entry)
        keep = b""
        if rest:
            half = entry.model_copy(update={"assistant_response": None})
            keep = encode_interaction(half, core.cipher)
        status, _ = yield from core.store.pop(sid, owner, t, expect=rec, replace=keep)
        if status == "ok":
            return newest
    raise ConcurrentModification(f"history of {sid!r} kept changing under pop_item")


def replace_history(
    core: Core, session_id: str, items: Sequence[Mapping[str, Any]], user_id: str | None,
    op_id: str | None = None,
) -> Op[list[Item]]:  # fmt: skip
    """Make ``items`` the whole history, atomically (compaction); an empty list clears it."""
    sid, owner = check.session_id(session_id), core.owner(user_id)
    t = core.stamp(op=core.op(op_id))
    models, records = _items(core, items, from_us(t.now), None)
    yield from core.store.replace_history(sid, owner, records, t)
    return models


def clear_history(
    core: Core, session_id: str, user_id: str | None, op_id: str | None = None
) -> Op[None]:
    """Remove every entry of the history; the session, its context and topics stay."""
    yield from replace_history(core, session_id, [], user_id, op_id)
