"""What a caller scoped to one user learns of other users' sessions: nothing.

A live, deleted or merged session of another user answers exactly like an id that never
existed, through every manager operation that takes a session id; the owner and an operator
(no user) still see the tombstone's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from redsession import RedsessionError, SessionManager, SessionMerged, SessionNotFound
from redsession.storage.keys import Keys

K = Keys()
Call = Callable[[SessionManager, str], object]

# Every operation that takes a session id, as alice would call it.
CALLS: dict[str, Call] = {
    "resume": lambda m, s: m.resume_session(s, "alice"),
    "get": lambda m, s: m.get_session(s, user_id="alice"),
    "history": lambda m, s: m.get_history(s, user_id="alice"),
    "history_since": lambda m, s: m.history_since(
        s, datetime(2000, 1, 1, tzinfo=timezone.utc), user_id="alice"
    ),
    "items": lambda m, s: m.get_items(s, user_id="alice"),
    "log": lambda m, s: m.log_interaction(s, user_message="x", user_id="alice"),
    "append": lambda m, s: m.append_items(s, [{"a": 1}], user_id="alice"),
    "pop": lambda m, s: m.pop_item(s, user_id="alice"),
    "replace": lambda m, s: m.replace_history(s, [], user_id="alice"),
    "clear": lambda m, s: m.clear_history(s, user_id="alice"),
    "context": lambda m, s: m.update_context(s, {"a": 1}, user_id="alice"),
    "export": lambda m, s: m.export_session(s, user_id="alice"),
    "merge in": lambda m, s: m.merge_sessions(MINE[0], s, user_id="alice"),
    "merge out": lambda m, s: m.merge_sessions(s, MINE[0], user_id="alice"),
    "delete": lambda m, s: m.delete_session(s, user_id="alice"),
}
MINE: list[str] = []


def _answer(m: SessionManager, call: Call, sid: str) -> tuple[type[BaseException], str]:
    with pytest.raises(RedsessionError) as info:
        call(m, sid)
    # The class may be PermissionDenied (a SessionNotFound; the CLI's exit code), the text
    # must be the missing one's.
    kind = SessionNotFound if isinstance(info.value, SessionNotFound) else type(info.value)
    return kind, str(info.value).replace(sid, "<id>")


@pytest.fixture
def bobs(manager: SessionManager) -> dict[str, str]:
    """bob's sessions in every state, and one of alice's (MINE) for the merges."""
    MINE[:] = [manager.create_session("alice").session_id]
    live, deleted, merged, primary = (manager.create_session("bob").session_id for _ in "1234")
    manager.log_interaction(live, user_message="bob's secret")
    manager.delete_session(deleted)
    manager.merge_sessions(primary, merged)
    # An operator merged one of alice's sessions into bob's: her old id must not lead her
    # there, nor name bob's session.
    crossed = manager.create_session("alice").session_id
    manager.merge_sessions(primary, crossed, allow_cross_user=True)
    # Tombstones written before they named their owner.
    old_deleted, old_merged = "old-deleted", "old-merged"
    manager.client.set(K.tomb(old_deleted), "deleted", px=60_000)
    manager.client.set(K.tomb(old_merged), f"merged:{primary}", px=60_000)
    return {"live": live, "deleted": deleted, "merged": merged, "primary": primary,
            "crossed": crossed, "old deleted": old_deleted, "old merged": old_merged}  # fmt: skip


@pytest.mark.parametrize("op", sorted(CALLS))
def test_another_users_session_in_any_state_reads_as_a_missing_one(
    manager: SessionManager, bobs: dict[str, str], op: str
) -> None:
    call = CALLS[op]
    missing = _answer(manager, call, "never-existed")
    for state, sid in bobs.items():
        got = _answer(manager, call, sid)
        assert got == missing, (state, got)
        assert bobs["primary"] not in got[1] or sid == bobs["primary"]


def test_the_owner_and_an_operator_still_see_why(
    manager: SessionManager, bobs: dict[str, str]
) -> None:
    for who in ("bob", None):
        with pytest.raises(SessionNotFound, match="was deleted"):
            manager.get_session(bobs["deleted"], user_id=who)
        with pytest.raises(SessionMerged) as merged:
            manager.log_interaction(bobs["merged"], user_message="x", user_id=who)
        assert merged.value.primary_id == bobs["primary"]
    # Reads of a merged id follow it to the primary, for its owner.
    assert manager.get_session(bobs["merged"], user_id="bob").session_id == bobs["primary"]
    with pytest.raises(SessionMerged):
        manager.log_interaction(bobs["old merged"], user_message="x")
    with pytest.raises(SessionNotFound, match="was deleted"):
        manager.get_session(bobs["old deleted"])
