"""pytest plugin: the OpenAI Agents SDK's own session tests, run against RedsessionSession.

Loaded with ``-p openai_agents_plugin`` by a pytest process started in the root of the SDK's
sdist (tests/test_openai_agents.py does that), never inside our own test session: the SDK's
tests import their helpers as ``tests.*``, which our ``tests`` package would shadow. This
folder has no ``__init__.py`` so that the module imports under its own top-level name.

In tests/memory/test_session.py and test_session_limit.py the name ``SQLiteSession`` is
replaced by ``SQLiteShapedSession``: a RedsessionSession with SQLiteSession's constructor and
its synchronous close(). The SDK's tests run unmodified; only those that reach into SQLite's
internals are deselected (DESELECTED, each with its reason).

Environment: REDSESSION_SDK_REDIS_URL, a server the calling suite started (it is flushed
after each test).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redsession.async_manager import AsyncSessionManager
from redsession.integrations.openai_agents import RedsessionSession

URL_ENV = "REDSESSION_SDK_REDIS_URL"
USER = "sdk-tests"
TARGET_MODULES = frozenset({"test_session.py", "test_session_limit.py"})

_SQLITE_CONNECTIONS = "reads SQLiteSession._connections (its per-thread sqlite3 connections)"
_CORRUPT_ROW = "writes a corrupt row with SQL through SQLiteSession._locked_connection()"
_WRITE_LOCK = "checks the SQLite file's write lock with a sqlite3 probe or a dropped table"
_CONNECTION_FACTORY = "injects a sqlite3.Connection subclass through _get_connection"
DESELECTED: dict[str, str] = {
    "test_sqlite_session_close_closes_worker_thread_connections": _SQLITE_CONNECTIONS,
    "test_sqlite_session_reaps_connections_from_exited_worker_threads": _SQLITE_CONNECTIONS,
    "test_sqlite_session_closes_retired_connections_before_the_next_allocation": (
        _SQLITE_CONNECTIONS + " and monkeypatches sqlite3.connect"
    ),
    "test_sqlite_session_keeps_connections_of_live_worker_threads": _SQLITE_CONNECTIONS,
    "test_sqlite_session_closed_rejects_empty_add_items": (
        "expects SQLiteSession's terminal closed state and its message 'SQLiteSession is "
        "closed'; the Session protocol has no close()"
    ),
    "test_sqlite_session_pop_item_skips_corrupt_most_recent": _CORRUPT_ROW,
    "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": _CORRUPT_ROW,
    "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": _CORRUPT_ROW,
    "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": _CORRUPT_ROW,
    "test_sqlite_session_file_lock_is_shared_across_instances": (
        "reads SQLiteSession._lock, _file_lock_counts and _file_locks"
    ),
    "test_sqlite_session_failed_add_items_releases_write_lock": _WRITE_LOCK,
    "test_sqlite_session_failed_clear_session_rolls_back": _WRITE_LOCK,
    "test_sqlite_session_failed_pop_item_releases_write_lock": _WRITE_LOCK,
    "test_sqlite_session_rollback_failure_evicts_connection": _CONNECTION_FACTORY,
    "test_sqlite_session_close_retries_quarantined_connection": _CONNECTION_FACTORY,
    "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome": (
        _CONNECTION_FACTORY + " (a commit hook that pauses after COMMIT)"
    ),
}

_test_prefix = ["unset"]  # this test's key namespace, set by the fixture below


def _url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        raise pytest.UsageError(f"{URL_ENV} must name a Redis server the calling suite started")
    return url


class SQLiteShapedSession(RedsessionSession):
    """A RedsessionSession built the way the SDK's tests build a SQLiteSession.

    A class, not a factory function, so that ``isinstance(x, SQLiteSession)`` and
    subclasses of it still work. Sessions given the same ``db_path`` share a key prefix,
    as they would share a file; ``":memory:"`` gets a prefix of its own, as SQLite gives
    each in-memory session its own database.
    """

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
    ) -> None:
        db = (
            uuid.uuid4().hex[:12]
            if str(db_path) == ":memory:"
            else hashlib.sha1(f"{db_path}/{messages_table}".encode()).hexdigest()[:12]
        )
        manager = AsyncSessionManager.from_url(_url(), key_prefix=f"{_test_prefix[0]}-{db}")
        super().__init__(session_id, manager, user_id=USER, session_settings=session_settings)
        self.db_path = db_path

    def close(self) -> None:  # type: ignore[override]  # the tests call close() synchronously
        """A no-op. The tests call it from inside their running event loop, where a sync
        method cannot await a client's aclose(); the process's exit closes the sockets."""


def pytest_configure(config: pytest.Config) -> None:
    _url()  # fail at start-up, not in the first test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        name = getattr(item, "originalname", item.name)
        target = item.path.name in TARGET_MODULES
        (drop if target and name in DESELECTED else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _redsession_in_place_of_sqlite(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    if request.node.path.name not in TARGET_MODULES:
        yield
        return
    _test_prefix[0] = "sdk-" + uuid.uuid4().hex[:10]
    # The modules bound the name at import (`from agents import SQLiteSession`): patch the
    # module global, which the test functions look up when they run.
    monkeypatch.setattr(request.module, "SQLiteSession", SQLiteShapedSession)
    yield
    with redis.Redis.from_url(_url()) as client:  # sync: independent of the test's loops
        client.flushdb()
