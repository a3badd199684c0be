"""Pure functions that combine session content: context patches and two-session merges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redsession.model.models import Interaction, SessionRecord


def apply_patch(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``: dicts merge recursively, None deletes, anything else replaces."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping):
            prev = out.get(k)
            out[k] = apply_patch(prev if isinstance(prev, Mapping) else {}, v)
        else:
            out[k] = v
    return out


def overlay(winner: Mapping[str, Any], loser: Mapping[str, Any]) -> dict[str, Any]:
    """Both contexts deep-merged; on a conflict ``winner``'s value stays (None included)."""
    out = dict(loser)
    for k, v in winner.items():
        prev = out.get(k)
        if isinstance(v, Mapping) and isinstance(prev, Mapping):
            out[k] = overlay(v, prev)
        else:
            out[k] = v
    return out


def combine(
    primary: SessionRecord,
    p_items: Sequence[Interaction],
    secondary: SessionRecord,
    s_items: Sequence[Interaction],
) -> tuple[SessionRecord, list[Interaction]]:
    """The merge of two sessions, as DESIGN.md defines it. Idempotent: combining the result
    with the same secondary again gives the result back."""
    seen: dict[str, Interaction] = {}
    for i in (*p_items, *s_items):  # the primary's copy of a shared id wins
        seen.setdefault(i.id, i)
    items = sorted(seen.values(), key=lambda i: (i.timestamp, i.id))
    topics = list(dict.fromkeys((*primary.topics, *secondary.topics)))
    merged_from = list(
        dict.fromkeys((*primary.merged_from, secondary.session_id, *secondary.merged_from))
    )
    record = primary.model_copy(
        update={
            "created_at": min(primary.created_at, secondary.created_at),
            "last_activity": max(primary.last_activity, secondary.last_activity),
            "total_interactions": len(items),
            "context": overlay(primary.context, secondary.context),
            "topics": topics,
            "merged_from": merged_from,
        }
    )
    return record, items


def same_content(
    a: SessionRecord,
    a_items: Sequence[Interaction],
    b: SessionRecord,
    b_items: Sequence[Interaction],
) -> bool:
    """Equal but for the version counter: a merge re-run after a crash writes nothing."""
    return a.model_copy(update={"version": b.version}) == b and list(a_items) == list(b_items)
