"""The SQL mirror (redsession/mirror/) on SQLite and on a PostgreSQL the suite starts itself."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.fernet import Fernet

from redsession import SessionManager
from redsession.cli import cli
from redsession.config import Settings
from redsession.errors import ConfigError, InvalidInput, SqlError
from redsession.mirror import schema
from redsession.mirror.database import Database
from redsession.mirror.rows import Rows
from redsession.services.worker import Worker
from redsession.storage.connection import sync_client
from tests.postgres import PostgresServer

UTC = timezone.utc
OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
MakeManager = Callable[..., SessionManager]


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mirror.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.database()


@pytest.fixture
def database(sql_url: str) -> Iterator[Database]:
    db = Database(sql_url)
    db.open()
    yield db
    db.close()


def rows_of(m: SessionManager, db: Database) -> Rows:
    return Rows(db, m.core.cipher, m.settings)


def conversation(m: SessionManager, user: str = "alice", **kw: Any) -> str:
    """A session with some of everything: interactions, items, context, state, topics."""
    sid = m.create_session(user, context={"plan": "pro", "n": 2**53}, state={"k": [1, 2]}, **kw)
    sid = sid.session_id
    m.log_interaction(sid, user_message="my invoice is wrong", assistant_response="let me see",
                      metadata={"lang": "en"}, topics=["billing"])  # fmt: skip
    m.log_interaction(sid, user_message="thanks", topics=["billing", "thanks"])
    m.append_items(sid, [{"role": "user", "content": "a tool call", "x": {"b": 1, "a": 2}}])
    return sid


def table(db: Database, name: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.metadata.tables[name])).mappings()]


# -- round trip and contents -----------------------------------------------------------------


def test_a_mirrored_session_equals_its_export(manager: SessionManager, database: Database) -> None:
    sids = [conversation(manager, u) for u in ("alice", "bob")]
    sids.append(manager.create_session("carol").session_id)  # no history at all
    manager.set_preferences("alice", {"lang": "fr", "tz": None, "deep": {"a": [1]}})
    report = manager.mirror_sql(database)
    assert report.full_copy
    assert report.upserted == 3
    rows = rows_of(manager, database)
    for sid in sids:
        assert rows.export(sid) == manager.export_session(sid)
    prefs = {
        (r["user_id"], r["key"]): json.loads(r["value"]) for r in table(database, "preferences")
    }
    assert prefs == {("alice", "lang"): "fr", ("alice", "deep"): {"a": [1]}}
    # A second run with nothing changed reads no event and writes nothing.
    again = manager.mirror_sql(database)
    assert (again.events, again.upserted, again.full_copy) == (0, 0, False)


def test_changes_reach_sql_on_the_next_run(manager: SessionManager, database: Database) -> None:
    sid = conversation(manager)
    other = conversation(manager, "bob")
    manager.mirror_sql(database)
    manager.log_interaction(sid, user_message="one more")
    manager.update_context(sid, {"plan": None, "seats": 3})
    manager.set_preferences("bob", {"lang": "de"})
    report = manager.mirror_sql(database)
    assert (report.upserted, report.users, report.full_copy) == (1, 1, False)
    rows = rows_of(manager, database)
    assert rows.export(sid) == manager.export_session(sid)
    assert rows.export(other) == manager.export_session(other)
    assert [r["value"] for r in table(database, "preferences")] == ['"de"']


def test_delete_merge_and_expiry_remove_sessions(
    make_manager: MakeManager, database: Database
) -> None:
    m = make_manager(session_ttl=timedelta(seconds=1))
    gone, primary, secondary, expiring = (conversation(m) for _ in range(4))
    m.mirror_sql(database)
    m.delete_session(gone)
    m.merge_sessions(primary, secondary)
    report = m.mirror_sql(database)
    assert report.removed == 2
    in_sql = {r["session_id"] for r in table(database, "sessions")}
    assert in_sql == {primary, expiring}
    assert rows_of(m, database).export(primary) == m.export_session(primary)
    # Expiry: Redis drops the keys, cleanup writes the 'expire' events.
    time.sleep(1.2)
    assert m.cleanup().sessions == 2
    assert m.mirror_sql(database).removed == 2
    assert table(database, "sessions") == []
    assert table(database, "entries") == []
    assert table(database, "topics") == []


def test_expired_sessions_kept_and_marked_when_settings_say_so(
    make_manager: MakeManager, database: Database
) -> None:
    m = make_manager(session_ttl=timedelta(seconds=1), sql_keep_expired=True)
    kept, deleted = conversation(m), conversation(m)
    m.mirror_sql(database)
    m.delete_session(deleted)
    time.sleep(1.2)
    m.cleanup()
    report = m.mirror_sql(database)
    assert (report.removed, report.expired) == (1, 1)
    [row] = table(database, "sessions")
    assert (row["session_id"], row["expired"]) == (kept, True)
    assert len(table(database, "entries")) == 3


def test_encrypted_fields_stay_encrypted(make_manager: MakeManager, database: Database) -> None:
    m = make_manager(encryption_keys=[Fernet.generate_key().decode()])
    sid = conversation(m)
    m.set_preferences("alice", {"secret": "hunter2"})
    m.mirror_sql(database)
    every_value = json.dumps(
        [table(database, t) for t in ("sessions", "entries", "preferences")], default=str
    )
    for plain in ("invoice", "let me see", "pro", "tool call", "hunter2", '"lang"'):
        assert plain not in every_value
    assert rows_of(m, database).export(sid) == m.export_session(sid)


def test_plaintext_when_settings_ask(make_manager: MakeManager, database: Database) -> None:
    m = make_manager(encryption_keys=[Fernet.generate_key().decode()], sql_plaintext=True)
    conversation(m)
    m.set_preferences("alice", {"secret": "hunter2"})
    m.mirror_sql(database)
    [s] = table(database, "sessions")
    assert json.loads(s["context"]) == {"plan": "pro", "n": 2**53}
    assert {e["user_message"] for e in table(database, "entries")} == {
        "my invoice is wrong", "thanks", None,
    }  # fmt: skip
    assert [p["value"] for p in table(database, "preferences")] == ['"hunter2"']


def test_no_message_text_when_sql_text_is_off(
    make_manager: MakeManager, sql_url: str, database: Database
) -> None:
    m = make_manager(sql_text=False)
    sid = conversation(m)
    m.mirror_sql(database)
    entries = table(database, "entries")
    assert [e["kind"] for e in entries] == ["interaction", "interaction", "item"]
    for e in entries:
        assert (e["user_message"], e["assistant_response"], e["metadata"], e["item"]) == (
            None, None, None, None,
        )  # fmt: skip
    [s] = table(database, "sessions")
    assert (s["session_id"], s["total_interactions"]) == (sid, 3)
    if sql_url.startswith("sqlite"):
        database.close()
        data = Path(sa.engine.make_url(sql_url).database or "").read_bytes()
        assert b"invoice" not in data
        assert b"tool call" not in data


def test_a_stream_that_dropped_events_gives_a_full_copy(
    make_manager: MakeManager, database: Database
) -> None:
    m = make_manager(events_maxlen=10)
    deleted = conversation(m)
    m.mirror_sql(database)
    m.delete_session(deleted)
    live = [m.create_session(f"u{i}").session_id for i in range(300)]  # the stream trims
    report = m.mirror_sql(database)
    assert report.full_copy
    assert {r["session_id"] for r in table(database, "sessions")} == set(live)


def test_a_run_costs_what_the_changed_sessions_cost(
    manager: SessionManager, database: Database
) -> None:
    sids = [manager.create_session(f"u{i}").session_id for i in range(200)]
    manager.mirror_sql(database)
    manager.log_interaction(sids[7], user_message="hello")
    report = manager.mirror_sql(database)
    assert (report.events, report.upserted) == (1, 1)


# -- the database: schema, read-only queries --------------------------------------------------


def test_a_newer_schema_is_refused(manager: SessionManager, database: Database) -> None:
    with database.transaction() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(ConfigError, match="newer than this redsession knows"):
        database.open()
    settings = manager.settings.model_copy(update={"sql_url": database.url})
    with pytest.raises(ConfigError, match="newer"):
        Worker(settings, manager)


def test_queries_are_read_only(manager: SessionManager, database: Database) -> None:
    conversation(manager)
    manager.mirror_sql(database)
    columns, rows = database.query("SELECT user_id, total_interactions FROM sessions")
    assert (columns, rows) == (["user_id", "total_interactions"], [("alice", 3)])
    for write in ("DELETE FROM sessions", "UPDATE sessions SET user_id = 'x'",
                  "DROP TABLE entries"):  # fmt: skip
        with pytest.raises(InvalidInput):
            database.query(write)
    assert database.query("SELECT count(*) FROM sessions")[1] == [(1,)]
    with pytest.raises(InvalidInput, match="query failed"):
        database.query("SELECT nonsense FROM nowhere")


def test_the_cli_prints_a_table_or_json(manager: SessionManager, tmp_path: Path) -> None:
    conversation(manager)
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    db = Database(url)
    db.open()
    manager.mirror_sql(db)
    db.close()
    base = ["--data-dir", str(tmp_path), "sql", "--sql-url", url]
    runner = CliRunner()
    out = runner.invoke(cli, [*base, "SELECT user_id, topic FROM sessions JOIN topics USING "
                                     "(session_id) ORDER BY position"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert re.search(r"alice\s*│\s*billing", out.stdout)
    assert "2 row(s)" in out.stdout
    out = runner.invoke(cli, ["--json", *base, "SELECT user_id, total_interactions FROM sessions"])
    assert json.loads(out.stdout) == [{"user_id": "alice", "total_interactions": 3}]
    out = runner.invoke(cli, [*base, "DELETE FROM sessions"])
    assert out.exit_code == 2
    assert "read-only" in out.stderr
    assert "Traceback" not in out.output
    missing = ["--data-dir", str(tmp_path / "none"), "sql", "SELECT 1"]
    out = runner.invoke(cli, missing)
    assert (out.exit_code, "no SQL mirror at" in out.stderr) == (1, True)


# -- the three example queries of docs/operations.md ------------------------------------------


def example_queries(dialect: str) -> dict[str, str]:
    """The ```sql blocks of docs/operations.md, by their first line's title, for a dialect:
    '-- Title' is for both, '-- Title (SQLite)' / '-- Title (PostgreSQL)' for one."""
    found: dict[str, str] = {}
    for block in re.findall(r"```sql\n(.*?)```", OPERATIONS.read_text(), re.S):
        first, _, body = block.partition("\n")
        m = re.fullmatch(r"-- (.+?)(?: \((SQLite|PostgreSQL)\))?", first.strip())
        assert m, first
        if m[2] is None or m[2].lower() == dialect:
            found[m[1]] = body
    return found


# Day 1 is today (UTC): every session of the data set must still live in Redis.
_DAY1 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def at(day: int, hour: int = 12) -> datetime:
    return _DAY1 + timedelta(days=day - 1, hours=hour)


def iso_day(day: int) -> str:
    return at(day).date().isoformat()


def test_the_example_queries_answer_on_a_known_data_set(
    redis_url: str, database: Database
) -> None:
    clock = {"now": at(1)}
    m = SessionManager(sync_client(redis_url, Settings()), clock=lambda: clock["now"])
    try:
        # (user, day created, day of last activity, interactions, topics)
        plan = [
            ("ann", 1, 1, 2, ["billing"]),
            ("ann", 5, 5, 4, []),  # ann came back 4 days later
            ("ben", 1, 2, 1, ["shipping"]),
            ("ben", 12, 12, 3, ["billing", "shipping"]),  # ben, 10 days after: not within a week
            ("cat", 5, 5, 0, []),
            ("dan", 2, 3, 5, ["refund"]),
            ("dan", 9, 9, 1, ["billing"]),  # dan: 6 days after his first session ended
        ]
        ids = []
        for user, created, last, n, topics in plan:
            clock["now"] = at(created)
            sid = m.create_session(user).session_id
            clock["now"] = at(last)
            for i in range(n):
                m.log_interaction(sid, user_message=f"m{i}", topics=topics)
            ids.append(sid)
        m.mirror_sql(database)
        queries = example_queries(database.dialect)
        assert set(queries) == {
            "Users who came back within a week", "Sessions where a topic appears",
            "Average interactions per session, by day",
        }  # fmt: skip
        _, rows = database.query(queries["Users who came back within a week"])
        assert sorted(r[0] for r in rows) == ["ann", "dan"]
        _, rows = database.query(queries["Sessions where a topic appears"], {"topic": "billing"})
        assert sorted(r[0] for r in rows) == sorted([ids[0], ids[3], ids[6]])
        _, rows = database.query(queries["Average interactions per session, by day"])
        by_day = {str(r[0])[:10]: float(r[1]) for r in rows}
        assert by_day == {iso_day(1): 1.5, iso_day(2): 5.0, iso_day(5): 2.0, iso_day(9): 1.0,
                          iso_day(12): 3.0}  # fmt: skip
    finally:
        m.close()


# -- the worker: deletions within one period, crashes, a database that is down ----------------


def test_the_worker_mirrors_deletes_and_merges_within_one_period(
    make_manager: MakeManager, database: Database, tmp_path: Path
) -> None:
    m = make_manager(data_dir=tmp_path, sql_interval=timedelta(seconds=1),
                     job_jitter=timedelta(0), sql_url=database.url)  # fmt: skip
    deleted, primary, secondary = (conversation(m) for _ in range(3))
    worker = Worker(m.settings, m, bgsave=False, restore=False, database=database)
    runs: list[tuple[float, set[str]]] = []  # (when a mirror run started, SQL after it)
    mirror = worker._jobs["mirror"]

    def recorded() -> str:
        started = time.monotonic()
        outcome = mirror()
        runs.append((started, {r["session_id"] for r in table(database, "sessions")}))
        return outcome

    worker._jobs["mirror"] = recorded
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert _within(5.0, lambda: bool(runs) and len(runs[-1][1]) == 3)
        m.delete_session(deleted)
        m.merge_sessions(primary, secondary)
        changed = time.monotonic()
        assert _within(5.0, lambda: any(at > changed for at, _ in runs))
        # The first run that started after the change, one period later at most, has it.
        first_after = next(sql for at, sql in runs if at > changed)
        assert first_after == {primary}
        assert rows_of(m, database).export(primary) == m.export_session(primary)
    finally:
        worker.request_stop()
        thread.join(10)
    assert not thread.is_alive()


def _within(seconds: float, check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


MIRROR_CODE = """
import sys
from redsession import SessionManager
from redsession.mirror.database import Database
m = SessionManager.from_url(sys.argv[1])
db = Database(sys.argv[2])
db.open()
print(m.mirror_sql(db), flush=True)
"""


@pytest.mark.slow
def test_kill_9_mid_mirror_leaves_sql_consistent_and_the_next_run_completes(
    manager: SessionManager, redis_url: str, sql_url: str
) -> None:
    sids = []
    for i in range(300):
        sid = manager.create_session(f"u{i % 7}").session_id
        manager.append_items(sid, [{"role": "user", "content": f"{i}-{j}"} for j in range(40)])
        sids.append(sid)
    db = Database(sql_url)
    db.open()  # the schema, so that the poll below can count rows from the start
    proc = subprocess.Popen([sys.executable, "-c", MIRROR_CODE, redis_url, sql_url])
    try:
        assert _within(60, lambda: len(table(db, "sessions")) >= 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        done = {r["session_id"] for r in table(db, "sessions")}
        assert 20 <= len(done) < len(sids)  # killed mid-run
        rows = rows_of(manager, db)
        for sid in done:  # every session in SQL is whole: one transaction each
            assert rows.export(sid) == manager.export_session(sid)
        report = manager.mirror_sql(db)
        assert report.full_copy  # the killed run never reached its cursor
        assert {r["session_id"] for r in table(db, "sessions")} == set(sids)
        for sid in sids[::10]:
            assert rows.export(sid) == manager.export_session(sid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        db.close()


def test_the_worker_runs_its_other_jobs_while_the_database_is_down_and_catches_up(
    make_manager: MakeManager, postgres_server: PostgresServer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url = postgres_server.database()
    m = make_manager(data_dir=tmp_path, sql_url=url)
    database = Database(url)
    worker = Worker(m.settings, m, bgsave=False, restore=False, database=database)
    worker.lock.acquire()
    try:
        first = conversation(m)
        worker._run_job("mirror")
        assert [r["session_id"] for r in table(database, "sessions")] == [first]
        postgres_server.stop()
        try:
            second = conversation(m, "bob")
            m.delete_session(first)
            worker._run_job("mirror")  # said in the log, not raised
            assert "the SQL mirror is unavailable" in caplog.text
            worker._run_job("dump")
            assert (tmp_path / "sessions" / f"{second}.json").is_file()
            with pytest.raises(SqlError):
                table(database, "sessions")
        finally:
            postgres_server.start()

        def next_period() -> bool:  # the job as its next periods run it
            worker._run_job("mirror")
            try:
                return [r["session_id"] for r in table(database, "sessions")] == [second]
            except SqlError:  # not accepting connections yet
                return False

        assert _within(10.0, next_period)
        assert rows_of(m, database).export(second) == m.export_session(second)
    finally:
        worker.lock.release()
        database.close()


def test_a_worker_started_while_the_database_is_down_starts(
    make_manager: MakeManager, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.database()
    m = make_manager(data_dir=tmp_path, sql_url=url)
    postgres_server.stop()
    try:
        worker = Worker(m.settings, m, bgsave=False, restore=False)
        assert "mirror" in worker.jobs
    finally:
        postgres_server.start()
    worker.lock.acquire()
    try:
        sid = conversation(m)
        worker._run_job("mirror")
        assert worker.database is not None
        assert [r["session_id"] for r in table(worker.database, "sessions")] == [sid]
    finally:
        worker.lock.release()
        if worker.database is not None:
            worker.database.close()


def test_the_default_database_is_sqlite_in_the_data_dir(
    make_manager: MakeManager, tmp_path: Path
) -> None:
    m = make_manager(data_dir=tmp_path)
    worker = Worker(m.settings, m, bgsave=False, restore=False)
    assert worker.database is not None
    assert worker.database.url == f"sqlite:///{tmp_path.resolve() / 'sessions.sqlite3'}"
    assert (tmp_path / "sessions.sqlite3").is_file()
    worker.database.close()
    off = make_manager(data_dir=tmp_path / "off", sql_mirror=False)
    assert Worker(off.settings, off).jobs == ("cleanup", "dump", "backup", "rollup")
    assert not (tmp_path / "off" / "sessions.sqlite3").exists()


def test_the_migrations_build_the_schema_of_schema_py(database: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with database.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []


def test_a_cursor_from_another_stream_gives_a_full_copy(
    manager: SessionManager, database: Database
) -> None:
    old = conversation(manager)
    manager.mirror_sql(database)
    manager.client.flushall()  # the suite's own server: as if the mirror now followed another
    new = manager.create_session("bob").session_id
    report = manager.mirror_sql(database)
    assert report.full_copy
    assert {r["session_id"] for r in table(database, "sessions")} == {new}
    assert old != new


def test_bad_urls_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REDSESSION_SQL_URL"):
        Database("not a url")
    with pytest.raises(ConfigError, match="REDSESSION_SQL_URL"):
        Database("nosuchdb://host/db")
    pg = Database("postgresql://user:secret@127.0.0.1:1/db")  # psycopg, not psycopg2
    assert pg.engine.url.drivername == "postgresql+psycopg"
    with pytest.raises(SqlError, match="unavailable"):
        pg.open()
    pg.close()


def test_the_mirror_on_a_cluster_and_on_one_server(url: str, tmp_path: Path) -> None:
    """On a cluster the events (preferences' too) come from the second step."""
    db = Database(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    db.open()
    with SessionManager.from_url(url) as m:
        sid = conversation(m)
        m.mirror_sql(db)
        m.log_interaction(sid, user_message="again")
        m.set_preferences("alice", {"lang": "fr"})
        report = m.mirror_sql(db)
        assert (report.upserted, report.users) == (1, 1)
        assert rows_of(m, db).export(sid) == m.export_session(sid)
        primary = conversation(m, "bob")
        secondary = conversation(m, "bob")
        m.merge_sessions(primary, secondary)
        m.mirror_sql(db)
        assert {r["session_id"] for r in table(db, "sessions")} == {sid, primary}
        assert rows_of(m, db).export(primary) == m.export_session(primary)
    db.close()


async def test_the_async_manager_mirrors_the_same_way(redis_url: str, tmp_path: Path) -> None:
    from redsession import AsyncSessionManager

    db = Database(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    db.open()
    with SessionManager.from_url(redis_url) as m:
        sid = conversation(m)
        am = AsyncSessionManager.from_url(redis_url)
        try:
            report = await am.mirror_sql(db)
        finally:
            await am.close()
        assert report.upserted == 1
        assert rows_of(m, db).export(sid) == m.export_session(sid)
    db.close()


def test_bad_queries_are_invalid_input(manager: SessionManager, database: Database) -> None:
    manager.mirror_sql(database)
    for bad in ("SELECT :unbound", "SELECT 'a\udc80'", "   "):
        with pytest.raises(InvalidInput):
            database.query(bad)
