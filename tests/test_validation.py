"""Input validation (no server)."""

from __future__ import annotations

import pytest

from redsession.errors import InvalidInput, InvalidSessionId, PayloadTooLarge
from redsession.model import validation as check
from redsession.model.models import Interaction, built, from_us, to_us, utcnow


def test_ids() -> None:
    assert check.session_id("A-z_09") == "A-z_09"
    assert check.user_id("alice@example.com") == "alice@example.com"
    assert check.user_id("tenant:42") == "tenant:42"
    for bad in ("", "a/b", "a.b", "x" * 129, "{a}", " a", "ü"):
        with pytest.raises(InvalidSessionId):
            check.session_id(bad)
    for bad in ("", "a b", "{a}", "x" * 257, "a\nb"):
        with pytest.raises(InvalidSessionId):
            check.user_id(bad)


def test_text_limits_count_utf8_bytes() -> None:
    assert check.text("é" * 5, "m", 10) == "é" * 5
    with pytest.raises(PayloadTooLarge):
        check.text("é" * 6, "m", 10)
    with pytest.raises(InvalidInput):
        check.text(b"bytes", "m", 10)


def test_json_object() -> None:
    assert check.json_object({"a": [1, 2.5, None, True, "x"]}, "c", max_bytes=100, max_depth=3)
    with pytest.raises(PayloadTooLarge):
        check.json_object({"a": {"b": {"c": {}}}}, "c", max_bytes=100, max_depth=3)
    with pytest.raises(PayloadTooLarge):
        check.json_object({"a": "x" * 100}, "c", max_bytes=50, max_depth=3)
    for bad in ({"a": float("inf")}, {"a": {1, 2}}, {2: "int key"}, [1], "s", {"a": 2**64}):
        with pytest.raises(InvalidInput):
            check.json_object(bad, "c", max_bytes=100, max_depth=3)


def test_topics() -> None:
    assert check.topics(["a", "b", "a"], 5) == ["a", "b"]
    assert check.topics(None, 5) == []
    for bad in ("ab", [1], [""], ["x" * 257]):
        with pytest.raises(InvalidInput):
            check.topics(bad, 5)
    with pytest.raises(PayloadTooLarge):
        check.topics(["a", "b", "c"], 2)


def test_microsecond_timestamps_are_exact() -> None:
    now = utcnow()
    assert from_us(to_us(now)) == now
    assert len({check.new_session_id() for _ in range(1000)}) == 1000


def test_generated_ids_never_look_like_command_line_options() -> None:
    assert not any(check.new_session_id().startswith("-") for _ in range(5000))


def test_a_built_model_is_the_validated_one() -> None:
    values = {
        "kind": "interaction", "id": "i-1", "timestamp": from_us(1_800_000_000_123_456),
        "user_message": "hi", "assistant_response": None, "metadata": {"a": [1, {"b": None}]},
        "topics": ["x"],
    }  # fmt: skip
    made, checked = built(Interaction, dict(values)), Interaction.model_validate(values)
    assert made == checked
    assert made.model_dump_json() == checked.model_dump_json()
    assert made.model_dump() == checked.model_dump()
    assert repr(made) == repr(checked)
    with pytest.raises(Exception, match="frozen"):
        made.id = "other"  # type: ignore[misc]
