"""The pure context functions: a patch over a context, two contexts merged (no server)."""

from __future__ import annotations

from datetime import datetime, timezone

from redsession.model.contexts import apply_patch, overlay

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
