"""The pure merge functions (no server)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from redsession.model.merge import apply_patch, combine, overlay, same_content
from redsession.model.models import Interaction, SessionRecord

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_apply_patch() -> None:
    base = {"a": {"b": 1, "c": {"d": 2}}, "e": 3, "f": [1]}
    patch = {"a": {"c": {"d": None, "x": 1}}, "e": None, "f": {"g": None}, "new": None}
    assert apply_patch(base, patch) == {"a": {"b": 1, "c": {"x": 1}}, "f": {}}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "e": 3, "f": [1]}  # not mutated


def test_overlay_primary_wins_including_none() -> None:
    assert overlay({"a": None, "b": {"c": 1}}, {"a": 5, "b": {"c": 2, "d": 3}, "e": 4}) == {
        "a": None, "b": {"c": 1, "d": 3}, "e": 4,
    }  # fmt: skip


def _rec(sid: str, **kw: object) -> SessionRecord:
    base = {"session_id": sid, "user_id": "u", "created_at": T0, "last_activity": T0,
            "total_interactions": 0}  # fmt: skip
    return SessionRecord.model_validate({**base, **kw})


def _i(iid: str, sec: int, who: str = "") -> Interaction:
    return Interaction(id=iid, timestamp=T0 + timedelta(seconds=sec), user_message=who + iid)


@given(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3)), unique_by=lambda x: x[0]),
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3)), unique_by=lambda x: x[0]),
)
def test_combine_is_idempotent_and_ordered(
    p: list[tuple[str, int]], s: list[tuple[str, int]]
) -> None:
    pi, si = [_i(i, t, "p") for i, t in p], [_i(i, t, "s") for i, t in s]
    prim, sec = _rec("P", topics=["x"]), _rec("S", topics=["y", "x"], merged_from=["Z"])
    rec, items = combine(prim, pi, sec, si)
    assert [(i.timestamp, i.id) for i in items] == sorted((i.timestamp, i.id) for i in items)
    assert {i.id for i in items} == {i for i, _ in p} | {i for i, _ in s}
    assert all(i.user_message.startswith("p") for i in items if i.id in dict(p))
    assert rec.total_interactions == len(items)
    assert rec.topics == ["x", "y"]
    assert rec.merged_from == ["S", "Z"]
    again, again_items = combine(rec, items, sec, si)
    assert same_content(again, again_items, rec, items)
