"""Settings read from the environment as docs/operations.md and the README document them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from redsession.config import Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("60", timedelta(seconds=60)),
        ("0.25", timedelta(seconds=0.25)),
        ("PT2M", timedelta(minutes=2)),
    ],
)
def test_durations_in_the_environment_are_seconds(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: timedelta
) -> None:
    monkeypatch.setenv("REDSESSION_SESSION_TTL", value)
    monkeypatch.setenv("REDSESSION_RETRY_DEADLINE", value)
    monkeypatch.setenv("REDSESSION_BACKUP_INTERVAL", value)
    s = Settings()
    assert s.session_ttl == s.retry_deadline == s.backup_interval == expected


def test_a_duration_that_is_not_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDSESSION_SESSION_TTL", "a week")
    with pytest.raises(ValidationError, match="session_ttl"):
        Settings()


def test_retries_must_end_inside_the_operation_id_window() -> None:
    # A retry after its operation id was forgotten would apply the write twice.
    with pytest.raises(ValidationError, match="retry_deadline must be shorter than op_window"):
        Settings(retry_deadline=timedelta(minutes=10), op_window=timedelta(minutes=5))
    assert Settings(retry_deadline=0).retry_deadline == timedelta(0)
