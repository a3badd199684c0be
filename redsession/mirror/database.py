"""The SQL mirror's database: its URL, its schema (Alembic migrations) and read-only queries.

SQLite by default (``<data_dir>/sessions.sqlite3``), PostgreSQL or any SQLAlchemy URL by
Settings.sql_url; both through SQLAlchemy 2 Core. Errors leave here as SqlError (the
database failed or is unreachable) or InvalidInput (a query that is not a read).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from redsession.config import Settings
from redsession.errors import ConfigError, InvalidInput, SqlError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_NAME = "sessions.sqlite3"


def database_url(settings: Settings) -> str:
    """Settings.sql_url, or the SQLite file in data_dir."""
    if settings.sql_url:
        return settings.sql_url
    return f"sqlite:///{Path(settings.data_dir).resolve() / SQLITE_NAME}"


def _alembic(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _failed(what: str, e: Exception) -> SqlError:
    # The driver's first line says what happened (connection refused, a locked file, ...).
    return SqlError(f"{what}: {_first(e)}")


class Database:
    """One mirror database. ``open()`` migrates its schema to the newest this redsession
    knows, and refuses a schema newer than that."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = sa.engine.make_url(url)
            if parsed.drivername in ("postgresql", "postgres"):
                # psycopg (3) is what redsession[postgresql] installs; SQLAlchemy's default
                # for a bare postgresql:// is psycopg2.
                parsed = parsed.set(drivername="postgresql+psycopg")
            self.dialect = parsed.get_backend_name()
            self.engine: Engine = sa.create_engine(parsed, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ImportError, ValueError) as e:
            raise ConfigError(f"REDSESSION_SQL_URL {_redacted(url)!r}: {e}") from e
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(database_url(settings))

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------

    def open(self) -> None:
        """Refuse a schema newer than this code knows; migrate an older one (or none)."""
        path = self.engine.url.database if self.dialect == "sqlite" else None
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SqlError(f"cannot make the folder of the SQL mirror {path}: {e}") from e
        with self.connect() as conn:
            cfg = _alembic(conn)
            head = ScriptDirectory.from_config(cfg).get_current_head()
            current = MigrationContext.configure(conn).get_current_revision()
            known = {r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()}
            if current is not None and current not in known:
                raise ConfigError(
                    f"the SQL mirror's schema is at revision {current!r}, newer than this "
                    f"redsession knows (up to {head!r}): upgrade redsession, or point "
                    "REDSESSION_SQL_URL at another database"
                )
            if current != head:
                try:
                    command.upgrade(cfg, "head")
                    conn.commit()
                except sa.exc.SQLAlchemyError as e:
                    raise _failed("could not migrate the SQL mirror", e) from e

    # -- connections ----------------------------------------------------------------------

    def connect(self) -> AbstractContextManager[Connection]:
        """A connection; database errors leave as SqlError."""
        return self.connect_to(self.engine)

    @staticmethod
    @contextmanager
    def connect_to(engine: Engine) -> Iterator[Connection]:
        try:
            with engine.connect() as conn:
                yield conn
        except sa.exc.OperationalError as e:
            raise _failed("the SQL mirror is unavailable", e) from e
        except sa.exc.DBAPIError as e:
            raise _failed("the SQL mirror failed", e) from e

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.connect() as conn, conn.begin():
            yield conn

    def query(self, sql: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[Any]]:
        """Run one read-only statement; (column names, rows). A write is refused by the
        database itself: SQLite opened read-only, PostgreSQL in a read-only transaction."""
        if not sql.strip():
            raise InvalidInput("the query is empty")
        engine = self._read_only_engine()
        try:
            with self.connect_to(engine) as conn:
                try:
                    return _read(conn, sql, params or {}, self.dialect)
                except sa.exc.DBAPIError as e:
                    if e.connection_invalidated:
                        raise  # the database went away: SqlError, from connect_to
                    if _is_write_refusal(e):
                        raise InvalidInput(f"the SQL mirror is read-only: {_first(e)}") from e
                    raise InvalidInput(f"the query failed: {_first(e)}") from e
                except (sa.exc.SQLAlchemyError, UnicodeError) as e:  # e.g. an unbound :name
                    raise InvalidInput(f"the query failed: {_first(e)}") from e
        finally:
            if engine is not self.engine:
                engine.dispose()

    def _read_only_engine(self) -> Engine:
        if self.dialect != "sqlite":
            return self.engine
        path = sa.engine.make_url(self.url).database or ""
        if not Path(path).is_file():
            raise SqlError(f"no SQL mirror at {path}: the worker creates it on its first run")
        # The file opened read-only by SQLite itself: no statement can change it.
        return sa.create_engine(
            f"sqlite:///file:{Path(path).resolve()}?mode=ro&uri=true",
            poolclass=sa.pool.NullPool,
        )


def _read(
    conn: Connection, sql: str, params: dict[str, Any], dialect: str
) -> tuple[list[str], list[Any]]:
    if dialect == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    result = conn.execute(sa.text(sql), params)
    if not result.returns_rows:
        raise InvalidInput("the statement returns no rows: only queries are run")
    columns = list(result.keys())
    rows = [tuple(r) for r in result]
    conn.rollback()
    return columns, rows


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (`redsession sql`) never block the mirror, nor it them. synchronous
    # NORMAL: a kill -9 loses nothing committed; a power cut may lose the last commits,
    # the cursor with them, so the next run simply mirrors those sessions again.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _first(e: Exception) -> str:
    lines = str(getattr(e, "orig", None) or e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _is_write_refusal(e: Exception) -> bool:
    message = _first(e).lower()
    return "readonly" in message or "read-only" in message


def _redacted(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<not a URL>"
