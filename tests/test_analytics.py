"""The analytics rollup (maintenance/rollup.py) and what the dashboard reads of it
(core/analytics.py), on a known data set."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from redsession import SessionManager
from redsession.core.analytics import bucket


def known_data(m: SessionManager) -> list[str]:
    """alice: 2 sessions (3 and 1 interactions); bob: 1 session (0). Topics: a x2, b x1."""
    a1 = m.create_session("alice").session_id
    a2 = m.create_session("alice").session_id
    b1 = m.create_session("bob").session_id
    for n in range(3):
        m.log_interaction(a1, user_message=f"q{n}", topics=["a"] if n else ["a", "b"])
    m.log_interaction(a2, user_message="hi", topics=["a"])
    return [a1, a2, b1]


@pytest.fixture
def on_both(url: str) -> Iterator[SessionManager]:
    """A manager on the single server, then on the cluster."""
    with SessionManager.from_url(url) as m:
        yield m


def test_the_figures_of_today(on_both: SessionManager) -> None:
    manager = on_both
    known_data(manager)
    report = manager.rollup()
    assert report.events == 7  # 3 creates, 4 logs
    assert report.new_users == 2
    a = manager.analytics(days=30)
    assert len(a.days) == 30
    today = a.days[-1]
    assert today.day == datetime.now(timezone.utc).date()
    assert (today.active_sessions, today.active_users) == (3, 2)
    assert (today.interactions, today.created, today.new_users) == (4, 3, 2)
    assert all(d.interactions == 0 for d in a.days[:-1])
    assert a.sampled == 3
    assert a.interactions_per_session == {
        "0": 1, "1": 1, "2-5": 1, "6-10": 0, "11-20": 0, "21-50": 0, "51-100": 0, "101+": 0,
    }  # fmt: skip
    assert a.top_topics == [("a", 2), ("b", 1)]
    assert a.expiring_24h == 0
    assert len(a.memory) == 1
    assert a.memory[0].used_memory > 0


def test_a_second_run_counts_only_new_events_and_users(on_both: SessionManager) -> None:
    manager = on_both
    sids = known_data(manager)
    manager.rollup()
    assert manager.rollup().events == 0
    manager.log_interaction(sids[2], user_message="bob again")
    manager.create_session("carol")
    report = manager.rollup()
    assert (report.events, report.new_users) == (2, 1)
    today = manager.analytics().days[-1]
    assert (today.interactions, today.new_users, today.active_users) == (5, 3, 3)


def test_analytics_read_no_more_than_a_sample(manager: SessionManager) -> None:
    for n in range(30):
        manager.create_session(f"u{n}")
    from redsession.core import analytics

    a = manager.run(analytics.analytics(manager.core, days=7, sample=10))
    assert a.sampled == 10
    assert sum(a.interactions_per_session.values()) == 10
    assert len(a.days) == 7


def test_overview_and_worker_status(on_both: SessionManager) -> None:
    from redsession.model.models import JobRun

    known_data(on_both)
    on_both.ping()
    o = on_both.overview()
    assert (o.sessions, o.users, o.expiring_24h) == (3, 2, 0)
    assert o.redis_used_memory > 0
    assert o.worker.leader is None
    run = JobRun(job="dump", at=datetime.now(timezone.utc), ok=True, seconds=0.5, outcome="x")
    on_both.record_job(run)
    assert on_both.worker_status().jobs == {"dump": run}


@pytest.mark.parametrize(
    ("total", "label"), [(0, "0"), (1, "1"), (2, "2-5"), (5, "2-5"), (6, "6-10"), (100, "51-100"),
                         (101, "101+"), (10**6, "101+")]
)  # fmt: skip
def test_buckets(total: int, label: str) -> None:
    assert bucket(total) == label
