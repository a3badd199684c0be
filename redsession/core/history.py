"""A session's history: appending interactions and reading them back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redsession.core.base import Core
from redsession.errors import InvalidInput, PayloadTooLarge
from redsession.model import validation as check
from redsession.model.codec import encode_interaction
from redsession.model.models import Interaction, from_us, trusted
from redsession.storage.commands import Op


def get_history(
    core: Core, session_id: str, limit: int | None, before: int | None, user_id: str | None
) -> Op[list[Interaction]]:
    sid, owner = check.session_id(session_id), core.owner(user_id)
    for name, v in (("limit", limit), ("before", before)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise InvalidInput(f"{name} must be a non-negative integer, not {check.show(v)}")
    t = core.stamp()
    raw = yield from core.follow(sid, lambda s: core.store.history(s, owner, t, limit, before))
    return core.decode(raw)


def log_interaction(
    core: Core, session_id: str, user_message: str, assistant_response: str | None,
    metadata: Mapping[str, Any] | None, topics: Sequence[str] | None, user_id: str | None,
) -> Op[Interaction]:  # fmt: skip
    s = core.settings
    sid, owner = check.session_id(session_id), core.owner(user_id)
    check.text(user_message, "user_message", s.max_message_bytes)
    if assistant_response is not None:
        check.text(assistant_response, "assistant_response", s.max_message_bytes)
    meta = {} if metadata is None else metadata
    meta_json = core.json(meta, "metadata")
    tops = check.topics(topics, s.max_topics)
    t = core.stamp()
    interaction = trusted(Interaction, {  # every field checked above
        "id": check.new_interaction_id(), "timestamp": from_us(t.now),
        "user_message": user_message, "assistant_response": assistant_response,
        "metadata": dict(meta), "topics": tops,
    })  # fmt: skip
    try:
        record = encode_interaction(interaction, core.cipher, meta_json)
    except TypeError as e:  # a lone surrogate in a message
        raise InvalidInput(f"interaction is not valid Unicode: {e}") from e
    status, _ = yield from core.store.log(sid, owner, record, tops, s.max_topics, t)
    if status == "limit":
        raise PayloadTooLarge(f"session {sid!r} would exceed {s.max_topics} topics")
    return interaction
